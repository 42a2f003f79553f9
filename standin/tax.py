"""The stand-in's fixed test tax rates, standing in for Stripe Tax (https://docs.stripe.com/tax/checkout)."""
from decimal import ROUND_HALF_UP, Decimal

# Percent by customer country (shipping address, else billing address). Every country not listed is taxed at 0%
# (as if the shop were not registered there). Products with the non-taxable code txcd_00000000 are never taxed.
# These are round test numbers shaped like common standard VAT/GST/sales-tax rates, not real tax advice.
RATES = {
    "AT": "20", "AU": "10", "BE": "21", "CA": "5", "CH": "8.1", "DE": "19", "DK": "25", "ES": "21", "FI": "25.5",
    "FR": "20", "GB": "20", "IE": "23", "IT": "22", "JP": "10", "NL": "21", "NO": "25", "NZ": "15", "PL": "23",
    "PT": "23", "SE": "25", "US": "7.25",
}
NONTAXABLE = "txcd_00000000"


def rate(country, tax_code=None):
    """The test rate (a Decimal fraction, e.g. 0.19) for a country and product tax code."""
    if tax_code == NONTAXABLE or not country:
        return Decimal(0)
    return Decimal(RATES.get(country.upper(), "0")) / 100


def tax_for(amount, r, behavior):
    """Tax in minor units on `amount`: added on top when exclusive, carved out when inclusive (half-up per line)."""
    if r == 0 or amount == 0:
        return 0
    if behavior == "inclusive":
        net = (Decimal(amount) / (1 + r)).quantize(Decimal(1), ROUND_HALF_UP)
        return amount - int(net)
    return int((Decimal(amount) * r).quantize(Decimal(1), ROUND_HALF_UP))
