% rebase('base.tpl', title=title)
<h1>Your cart</h1>
% if canceled and items and not paid:
<p class="notice" role="status">You left the payment page without paying. {{"Your cart holds what was left of each book when you went to pay." if held else "Your cart is just as you left it."}}</p>
% elif canceled and not paid:
<p class="notice" role="status">You left the payment page without paying.</p>
% end
% if paid or failed:
% bought = ", ".join(f'{i["quantity"]} × {i["name"]}' for i in (paid or failed)["items"])
% they = "they are" if sum(i["quantity"] for i in (paid or failed)["items"]) > 1 else "it is"
% if failed:
<p class="notice" role="status">Your payment for {{bought}} did not go through, so nothing was charged and {{they}} back in your cart.</p>
% elif paid["status"] == "awaiting_payment":
<p class="notice" role="status">Your payment for {{bought}} is processing, so {{they}} not in your cart now. <a href="/success?session_id={{paid['session_id']}}">See your order</a></p>
% else:
<p class="notice" role="status">You have paid for {{bought}}{{{"refunded": " (refunded since)", "partially_refunded": " (partly refunded since)", "disputed": " (disputed since)"}.get(paid["status"], "")}}, so {{they}} no longer in your cart. <a href="/success?session_id={{paid['session_id']}}">See your order</a></p>
% end
% end
% if changed:
<p class="notice" role="status">The shop changed a price or the copies left while you were checking out, so that checkout was canceled before you paid. Please check and try again.</p>
% end
% if empty_checkout and not items and not stock_notes:  # a note says why, if it was sold out
<p class="notice" role="status">Your cart is empty, so there is nothing to check out yet.</p>
% end
% if added and most:
<p class="notice" role="status">Your cart now holds {{most}} of “{{added.name}}”: that is as many as you can buy.</p>
% elif added:
<p class="notice" role="status">Added “{{added.name}}” to your cart.</p>
% end
% for note in stock_notes:
<p class="notice" role="status">{{note}}</p>
% end
% if pending and pending.get("session_url") and pending_other:
<p class="notice" role="status">You have a checkout still open for {{pending_other}}, which is not your cart as it is now. <a href="{{pending['session_url']}}">Continue your payment</a> for that{{", or check out below to pay for your cart instead: the open checkout is then canceled" if items else ""}}.</p>
% elif pending and pending.get("session_url"):
<p class="notice" role="status">You have a checkout that is still open. <a href="{{pending['session_url']}}">Continue your payment</a></p>
% end
% if items:
<table class="cart">
  <caption class="visually-hidden">Products in your cart</caption>
  <thead><tr><th scope="col">Product</th><th scope="col">Price</th><th scope="col">Quantity</th><th scope="col" class="num">Total</th><th scope="col"><span class="visually-hidden">Remove</span></th></tr></thead>
  <tbody>
% for product, quantity, total in items:
  <tr>
    <th scope="row">{{product.name}}</th>
    <td data-label="Price" class="money">{{money(product.price)}}</td>
    <td data-label="Quantity">
      <form method="post" action="/cart" class="qty">
        <input type="hidden" name="csrf_token" value="{{csrf}}">
        <input type="hidden" name="action" value="set">
        <input type="hidden" name="product_id" value="{{product.id}}">
        <label for="qty-{{product.id}}" class="visually-hidden">Quantity of {{product.name}}</label>
        <input id="qty-{{product.id}}" name="quantity" type="number" inputmode="numeric" min="0" max="99" value="{{quantity}}" required>
        <button type="submit" class="secondary">Update<span class="visually-hidden"> {{product.name}}</span></button>
      </form>
    </td>
    <td data-label="Total" class="num">{{money(total)}}</td>
    <td>
      <form method="post" action="/cart">
        <input type="hidden" name="csrf_token" value="{{csrf}}">
        <input type="hidden" name="action" value="remove">
        <input type="hidden" name="product_id" value="{{product.id}}">
        <button type="submit" class="link">Remove<span class="visually-hidden"> {{product.name}}</span></button>
      </form>
    </td>
  </tr>
% end
  </tbody>
  <tfoot><tr><th scope="row" colspan="3">Subtotal</th><td class="num subtotal">{{money(subtotal)}}</td><td></td></tr></tfoot>
</table>
% if tax == ("automatic", "exclusive"):
<p class="hint">Shipping and tax are calculated at checkout, once you give your address.</p>
% elif tax[0] == "automatic":
<p class="hint">Prices include tax. Shipping is added at checkout, once you give your address.</p>
% else:
<p class="hint">Shipping is added at checkout, once you give your address.</p>
% end
<p class="hint">{{"; ".join(f"{o.name}: {money(fee) if fee else 'free'}, {o.min_days}{'' if o.min_days == o.max_days else f'–{o.max_days}'} business day{'s' * (o.max_days > 1)}" for o, fee in shipping)}}.</p>
% for option, _ in shipping:
%   if option.free_over:
<p class="hint">Free {{option.name.lower()}} over {{money(option.free_over)}}{{"; this order qualifies" if subtotal >= option.free_over else ""}}.</p>
%   end
% end
<form method="post" action="/checkout" class="checkout">
  <input type="hidden" name="csrf_token" value="{{csrf}}">
  <button type="submit">Checkout</button>
</form>
% elif empty_checkout and not stock_notes:  # the notice above says it is empty
<p><a href="/">Browse the books</a>.</p>
% else:
<p>Your cart is empty. <a href="/">Browse the books</a>.</p>
% end
