% rebase('base.tpl', title=title)
<h1>Orders</h1>
% if catalog_error:
<div class="notice error" role="alert">
  <p>{{catalog_error}}.</p>
  <ul>
%   for problem in catalog_problems:
    <li>{{problem}}</li>
%   end
  </ul>
</div>
% end
<form method="get" action="/admin" class="filters">
  <label for="status">Status</label>
  <select id="status" name="status">
    <option value="">Any</option>
% for s in statuses:
    <option value="{{s}}"{{!' selected' if s == status else ''}}>{{s.replace("_", " ")}}</option>
% end
  </select>
  <label for="q">Order id or email</label>
  <input id="q" name="q" type="search" value="{{search}}" maxlength="100">
  <button type="submit">Show orders</button>
</form>
<p><a href="/admin/orders.csv{{'?' + query if query else ''}}">Download these orders as CSV</a></p>
<div class="scroll">
<table class="cart orders">
  <caption>{{len(orders)}} order{{"" if len(orders) == 1 else "s"}}, newest first{{" (" + status.replace("_", " ") + ")" if status else ""}}{{", matching “" + search + "”" if search else ""}}</caption>
  <thead><tr><th scope="col">Order</th><th scope="col">Created (UTC)</th><th scope="col">Status</th><th scope="col">Email</th><th scope="col" class="num">Total</th><th scope="col" class="num">Refunded</th></tr></thead>
  <tbody>
% for o in orders:
  <tr><th scope="row"><a href="/admin/orders/{{o['id']}}">{{o["id"]}}</a></th><td data-label="Created">{{o["created"][:16].replace("T", " ")}}</td><td data-label="Status">{{o["status"].replace("_", " ")}}</td><td data-label="Email">{{o["customer_email"] or "—"}}</td><td data-label="Total" class="num">{{amount(o["amount_total"], o["currency"]) if o["amount_total"] is not None else amount(o["amount_subtotal"], o["currency"]) + " (items)"}}</td><td data-label="Refunded" class="num">{{amount(o["amount_refunded"], o["currency"]) if o["amount_refunded"] else "—"}}</td></tr>
% end
  </tbody>
</table>
</div>
% if older:
<p><a href="/admin?{{older}}">Older orders</a></p>
% end
