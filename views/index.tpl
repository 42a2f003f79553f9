% rebase('base.tpl', title=title)
% # No indentation: browsers collapse the whitespace anyway. "Buy now" sends the same form (the quantity too) to
% # POST /checkout instead (formaction: no JavaScript needed); Enter in the box is "Add to cart", the first button.
<h1 class="visually-hidden">{{shop_name}}: books</h1>
<ul class="grid">
% for p in products:
<li class="card">
<img src="/static/{{p.image}}" alt="Cover of {{p.name}}" width="150" height="225" loading="lazy">
<h2>{{p.name}}</h2>
<p class="desc">{{p.description}}</p>
<p class="price">{{money(p.price)}}</p>
% if left.get(p.id) == 0:
<p class="stock out">Sold out{{" for now: copies in checkouts come back if not paid for" if held.get(p.id) else ""}}</p>
% else:
%   if p.id in left and left[p.id] <= low_stock:
<p class="stock">Only {{left[p.id]}} left</p>
%   end
<form method="post" action="/cart" class="add">
<input type="hidden" name="csrf_token" value="{{csrf}}">
<input type="hidden" name="action" value="add">
<input type="hidden" name="product_id" value="{{p.id}}">
<label for="q-{{p.id}}">Quantity<span class="visually-hidden"> of {{p.name}}</span></label>
<input id="q-{{p.id}}" name="quantity" type="number" min="1" max="{{min(99, left.get(p.id, 99))}}" value="1">
<button type="submit">Add to cart<span class="visually-hidden"> {{p.name}}</span></button>
<button type="submit" formaction="/checkout" class="buy">Buy now<span class="visually-hidden"> {{p.name}}</span></button>
</form>
% end
</li>
% end
</ul>
% if pages > 1:
<nav class="pages" aria-label="Catalog pages">
%   if page > 1:
<a href="/?page={{page - 1}}" rel="prev">← Previous</a>
%   end
<span>Page {{page}} of {{pages}}</span>
%   if page < pages:
<a href="/?page={{page + 1}}" rel="next">Next →</a>
%   end
</nav>
% end
