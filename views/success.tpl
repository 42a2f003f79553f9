% rebase('base.tpl', title=title)
<h1>{{title}}</h1>
% if state == "confirming":
<p class="notice" role="status">We are confirming your payment with Stripe. Nothing more is needed from you: please reload this page in a minute. If you paid, your order is safe.</p>
% else:
%   if state == "paid":
%     if order["status"] == "refunded":
<p class="notice" role="status">Your payment went through, and it has since been refunded in full: {{money(order["amount_refunded"], currency=summary["currency"])}}, returned the way you paid.</p>
%     else:
<p class="notice ok" role="status">{{"Your payment went through and your" if summary["amount_total"] else "Nothing was charged, and your"}} order is confirmed.{{" A receipt goes to " + summary["email"] + "." if mailed else ""}}{{" " + money(order["amount_refunded"], currency=summary["currency"]) + " of it has been refunded since." if order["amount_refunded"] else ""}}</p>
%     end
%   elif state == "processing":
<p class="notice" role="status">Your payment is processing. Some payment methods take a few days; {{"we will email you when it is confirmed" if mailed else "this page shows when it is confirmed"}}. There is no need to pay again.</p>
%   elif state == "failed":
<p class="notice error" role="alert">Your payment did not go through, so nothing was charged.{{" Its books are back in your cart." if restored else ""}} <a href="/cart">Back to your cart</a></p>
%   elif state == "expired":
<p class="notice" role="status">This checkout expired before it was paid. Nothing was charged. <a href="/cart">Back to your cart</a></p>
%   else:
<p class="notice" role="status">This checkout has not been paid yet. <a href="/cart">Back to your cart</a></p>
%   end
<table class="cart summary">
  <caption>Order {{order["id"]}}</caption>
  <thead><tr><th scope="col">Item</th><th scope="col">Quantity</th><th scope="col" class="num">Amount</th></tr></thead>
  <tbody>
%   for item in summary["items"]:
  <tr><th scope="row">{{item["name"]}}</th><td data-label="Quantity">{{item["quantity"]}}</td><td class="num">{{money(item["amount_subtotal"], currency=summary["currency"])}}</td></tr>
%   end
  </tbody>
  <tfoot>
  <tr><th scope="row" colspan="2">Subtotal</th><td class="num">{{money(summary["amount_subtotal"] or 0, currency=summary["currency"])}}</td></tr>
%   if summary["amount_discount"]:
  <tr><th scope="row" colspan="2">Discount{{" (" + summary["promotion_code"] + ")" if summary.get("promotion_code") else ""}}</th><td class="num">−{{money(summary["amount_discount"], currency=summary["currency"])}}</td></tr>
%   end
  <tr><th scope="row" colspan="2">Shipping</th><td class="num">{{money(summary["amount_shipping"], currency=summary["currency"])}}</td></tr>
%   if tax_later:  # Stripe Tax works it out from the address the shopper gives when paying
  <tr><th scope="row" colspan="2">Tax</th><td class="num">{{"included, " if summary.get("tax_included") else ""}}worked out when you pay</td></tr>
%   elif state != "expired":
  <tr><th scope="row" colspan="2">Tax{{" (included)" if summary.get("tax_included") else ""}}</th><td class="num">{{money(summary["amount_tax"], currency=summary["currency"])}}</td></tr>
%   end
  <tr class="total"><th scope="row" colspan="2">{{"Total charged" if state == "paid" else "Total before tax" if tax_later and not summary.get("tax_included") else "Total due" if state == "open" else "Total"}}</th><td class="num">{{money(summary["amount_total"] or 0, currency=summary["currency"])}} <span class="cur">{{summary["currency"].upper()}}</span></td></tr>
%   if state == "paid" and order["amount_refunded"]:  # after the total, so that the lines above still add up to it
  <tr><th scope="row" colspan="2">Refunded</th><td class="num">−{{money(order["amount_refunded"], currency=summary["currency"])}}</td></tr>
  <tr class="total"><th scope="row" colspan="2">Paid after refunds</th><td class="num">{{money((summary["amount_total"] or 0) - order["amount_refunded"], currency=summary["currency"])}} <span class="cur">{{summary["currency"].upper()}}</span></td></tr>
%   end
  </tfoot>
</table>
<dl class="facts">
  <dt>Status</dt><dd>{{ {"refunded": "Refunded", "partially_refunded": "Partly refunded", "disputed": "Disputed"}.get(order["status"], "Paid") if state == "paid" else {"processing": "Processing", "failed": "Payment failed", "expired": "Expired", "open": "Not paid"}[state] }}</dd>
%   if summary["email"]:
  <dt>Email</dt><dd>{{summary["email"]}}</dd>
%   end
%   if summary.get("shipping_method"):
  <dt>Delivery</dt><dd>{{summary["shipping_method"]}}</dd>
%   end
%   if summary["payment_intent"]:
  <dt>Payment reference</dt><dd><code>{{summary["payment_intent"]}}</code></dd>
%   end
</dl>
% end
<p><a href="/">Continue shopping</a></p>
