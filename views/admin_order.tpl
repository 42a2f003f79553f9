% rebase('base.tpl', title=title)
% cur = o["currency"]
<p><a href="/admin">All orders</a></p>
<h1>Order {{o["id"]}}</h1>
% if refunded and replayed:
<p class="notice" role="status">Refund {{refunded}} had already been made for this order and amount, so Stripe answered with it again and nothing more was refunded. To refund the same amount once more, wait until the order shows the first refund.</p>
% elif refunded and arrived:
<p class="notice ok" role="status">Refund {{refunded}} was made at Stripe, and the order below shows it.</p>
% elif refunded:
<p class="notice ok" role="status">Refund {{refunded}} was made at Stripe. The order shows it when Stripe’s charge.refunded event arrives (reload in a moment).</p>
% end
<dl class="facts">
  <dt>Status</dt><dd>{{o["status"].replace("_", " ")}}{{" (dispute " + o["dispute_status"] + ")" if o["dispute_status"] else ""}}</dd>
  <dt>Created</dt><dd>{{o["created"][:19].replace("T", " ")}} UTC</dd>
  <dt>Paid</dt><dd>{{o["fulfilled_at"][:19].replace("T", " ") + " UTC" if o["fulfilled_at"] else "—"}}</dd>
  <dt>Email</dt><dd>{{o["customer_email"] or "—"}}</dd>
  <dt>Payment reference</dt><dd>{{o["payment_intent"] or "—"}}</dd>
  <dt>Checkout session</dt><dd>{{o["session_id"] or "—"}}</dd>
</dl>
<h2>Items</h2>
<table class="cart">
  <thead><tr><th scope="col">Item</th><th scope="col">Quantity</th><th scope="col" class="num">Price</th><th scope="col" class="num">Amount</th></tr></thead>
  <tbody>
% for i in o["items"]:
  <tr><th scope="row">{{i["name"]}}</th><td data-label="Quantity">{{i["quantity"]}}</td><td data-label="Price" class="num">{{amount(i["unit_amount"], cur)}}</td><td data-label="Amount" class="num">{{amount(i["unit_amount"] * i["quantity"], cur)}}</td></tr>
% end
  </tbody>
  <tfoot>
% for label, key in (("Subtotal", "amount_subtotal"), ("Discount", "amount_discount"), ("Shipping", "amount_shipping"), (tax_label(o), "amount_tax"), ("Total", "amount_total"), ("Refunded", "amount_refunded")):
  <tr><th scope="row" colspan="3">{{label}}{{" (" + o["promotion_code"] + ")" if key == "amount_discount" and o["promotion_code"] else ""}}</th><td class="num">{{"−" if key == "amount_discount" and o[key] else ""}}{{amount(o[key], cur)}}</td></tr>
% end
  </tfoot>
</table>
<h2>Shipping address</h2>
% if record:
%   a = record["shipping_address"]
<p>{{record["shipping_name"] or ""}}<br>{{a["line1"] or ""}}<br>{{a["line2"] or ""}}{{!"<br>" if a["line2"] else ""}}{{a["postal_code"] or ""}} {{a["city"] or ""}} {{a["state"] or ""}}<br>{{a["country"] or ""}}</p>
<p>Phone: {{record.get("customer_phone") or "—"}}</p>
<p>Delivery: {{record.get("shipping_method") or "—"}}</p>
% else:
<p>Known once the order is paid.</p>
% end
<h2 id="refund">Refund</h2>
% if refundable:
<form method="post" action="/admin/orders/{{o['id']}}/refund" class="refund">
  <input type="hidden" name="csrf_token" value="{{csrf}}">
  <fieldset>
    <legend>How much to refund</legend>
%   if error:
  <p class="notice error" role="alert" id="amount-error">{{error}}</p>
%   end
    <p><input type="radio" id="full" name="how" value="full"{{"" if error else " checked"}}> <label for="full">Everything left: {{amount(left, cur)}}</label></p>
    <p><input type="radio" id="partial" name="how" value="partial"{{" checked" if error else ""}}> <label for="partial">Part of it:</label>
      <label for="amount">amount in {{cur.upper()}}</label> <input id="amount" name="amount" inputmode="decimal" size="10" maxlength="16" value="{{typed}}" aria-describedby="amount-hint{{" amount-error" if error else ""}}" aria-invalid="{{"true" if error else "false"}}"{{" autofocus" if error else ""}}>
      <span id="amount-hint" class="hint">for example {{example}}; at most {{amount(left, cur)}}</span></p>
  </fieldset>
% if o["restocked"]:
  <p>The order’s copies are back in stock already.</p>
% elif stocked:
  <p><input type="checkbox" id="restock" name="restock" value="1"{{" checked" if restock else ""}}> <label for="restock">Put the copies back in stock</label></p>
% end
  <button type="submit">Review the refund</button>
</form>
% else:
<p>Only a paid order with money left to refund can be refunded; this one is {{o["status"].replace("_", " ")}}.</p>
% end
<h2>Emails</h2>
% if mails:
<table class="cart log">
  <thead><tr><th scope="col">Email</th><th scope="col">To</th><th scope="col">Sent</th></tr></thead>
  <tbody>
%   for m in mails:
  <tr><th scope="row">{{m["kind"].replace("_", " ")}}{{" (" + amount(m["amount"], cur) + " refunded in all)" if m["kind"] == "refund" else ""}}</th><td data-label="To">{{m["recipient"]}}</td><td data-label="Sent">{{m["sent_at"] and m["sent_at"][:19].replace("T", " ") + " UTC" or "not yet ({} attempt{}{})".format(m["attempts"], "" if m["attempts"] == 1 else "s", ": " + m["last_error"] if m["last_error"] else "")}}</td></tr>
%   end
  </tbody>
</table>
% else:
<p>None.</p>
% end
<h2>History</h2>
<table class="cart log">
  <thead><tr><th scope="col">Time (UTC)</th><th scope="col">Status</th><th scope="col">By</th><th scope="col">Note</th></tr></thead>
  <tbody>
% for h in history:
  <tr><td data-label="Time">{{h["at"][:19].replace("T", " ")}}</td><td data-label="Status">{{h["status"].replace("_", " ")}}</td><td data-label="By">{{h["source"]}}</td><td data-label="Note">{{h["note"] or ""}}</td></tr>
% end
  </tbody>
</table>
