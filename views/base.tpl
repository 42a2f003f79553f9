<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{title + " · " if title else ""}}{{shop_name}}</title>
<link rel="stylesheet" href="/static/style.css">
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
</head>
<body>
<a class="skip" href="#main">Skip to content</a>
% if offline:
<aside class="banner" aria-label="Test mode"><strong>Offline test mode:</strong> payments go to a built-in Stripe stand-in. No real card is charged. Pay with test card 4242 4242 4242 4242.</aside>
% elif test_mode:
<aside class="banner" aria-label="Test mode"><strong>Test mode:</strong> Stripe test keys. No real card is charged.</aside>
% end
<header class="top">
  <a class="brand" href="/">{{shop_name}}</a>
% if path.startswith("/admin"):
  <nav aria-label="Orders"><a href="/admin" class="cartlink"{{!' aria-current="page"' if path == "/admin" else ""}}>Orders</a></nav>
% else:
  <nav aria-label="Shop"><a href="/cart" class="cartlink"{{!' aria-current="page"' if path == "/cart" else ""}}>Cart{{!' <span class="count">(%d)</span>' % cart_count if cart_count != "" else ""}}</a></nav>
% end
</header>
<main id="main">
{{!base}}
</main>
% if not path.startswith("/admin"):
<footer class="foot"><p>Payments are processed securely by Stripe. Prices in {{currency.upper()}}.</p></footer>
% end
</body>
</html>
