% rebase('base.tpl', title=title)
<h1>{{title}}</h1>
<p class="notice error" role="alert">{{message}}</p>
% if status == 503:
<p>Your cart is kept. <a href="/cart">Back to your cart</a></p>
% else:
<p><a href="/">Back to the shop</a> · <a href="/cart">Your cart</a></p>
% end
