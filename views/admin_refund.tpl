% rebase('base.tpl', title=title)
% cur = o["currency"]
% copies = sum(i["quantity"] for i in o["items"])  # a partial refund, too, gives back every copy of the order
<h1>Refund {{amount(refund, cur)}} of order {{o["id"]}}?</h1>
<p>{{amount(o["amount_total"], cur)}} was paid{{" by " + o["customer_email"] if o["customer_email"] else ""}}, and {{amount(o["amount_refunded"], cur)}} has been refunded so far. Stripe returns {{amount(refund, cur)}} to the shopper’s card{{("" if not restock or o["restocked"] else ", and the order’s copy goes back in stock" if copies == 1 else f", and all {copies} of the order’s copies go back in stock")}}. A refund cannot be undone.</p>
<form method="post" action="/admin/orders/{{o['id']}}/refund">
  <input type="hidden" name="csrf_token" value="{{csrf}}">
  <input type="hidden" name="minor" value="{{refund}}">
  <input type="hidden" name="confirm" value="yes">
  <input type="hidden" name="key" value="{{key}}">
% if restock:
  <input type="hidden" name="restock" value="1">
% end
  <button type="submit">Refund {{amount(refund, cur)}}</button>
  <a href="/admin/orders/{{o['id']}}">Cancel</a>
</form>
