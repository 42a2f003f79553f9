"""Stripe-shaped API errors: what the stand-in raises and how they render on the wire."""

# Error object fields and status codes follow https://docs.stripe.com/api/errors
DOC_BASE = "https://stripe.com/docs/error-codes/"


class StripeError(Exception):
    """An API error that renders as Stripe's `{"error": {...}}` body with its HTTP status."""

    def __init__(self, status, type_, message, code=None, param=None, headers=None, **extra):
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.code = code
        self.param = param
        self.headers = dict(headers or {})
        self.extra = extra

    def body(self):
        """The JSON-ready error object, as Stripe sends it."""
        err = {"type": self.type, "message": self.message}
        if self.code:
            err["code"] = self.code
            err["doc_url"] = DOC_BASE + self.code.replace("_", "-")
        if self.param:
            err["param"] = self.param
        err.update(self.extra)
        return {"error": err}


def invalid(message, param=None, code=None, **extra):
    """A 400 invalid_request_error."""
    return StripeError(400, "invalid_request_error", message, code=code, param=param, **extra)


def unknown_param(param):
    """Stripe's answer to a parameter it does not know."""
    return invalid(f"Received unknown parameter: {param}", param, "parameter_unknown")


def missing_param(param):
    """Stripe's answer to a required parameter left out."""
    return invalid(f"Missing required param: {param}.", param, "parameter_missing")


def no_such(resource, id_, param="id"):
    """404 resource_missing, worded like Stripe ("No such checkout.session: 'cs_...'")."""
    return StripeError(404, "invalid_request_error", f"No such {resource}: '{id_}'",
                       code="resource_missing", param=param)


def api_error(message="An unknown error occurred while processing your request."):
    """500 api_error (Stripe's side failed; clients may retry)."""
    return StripeError(500, "api_error", message)
