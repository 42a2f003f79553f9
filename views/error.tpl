% rebase('base.tpl', title=title)
<h1>{{title}}</h1>
<p class="notice error" role="alert">{{message}}{{" Your cart is kept." if status in (502, 503) and not admin and cart_count != 0 else ""}}</p>
% if admin:
<p><a href="/admin">All orders</a> · <a href="/">Back to the shop</a> · <a href="/cart">Your cart</a></p>
% elif status == 503 and cart_count != 0:
<p><a href="/cart">Back to your cart</a></p>
% else:
<p><a href="/">Back to the shop</a> · <a href="/cart">Your cart</a></p>
% end
