<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{{title}} · Test mode</title>
<link rel="stylesheet" href="{{css}}">
<link rel="icon" href="data:,">
</head>
<body class="sti">
<header class="sti-top"><span class="sti-business">Checkout</span><span class="sti-badge">Test mode</span></header>
<main class="sti-main sti-message">
  <h1>{{title}}</h1>
  <p>{{text}}</p>
  % if back_url:
  <p><a class="sti-button" href="{{back_url}}">Back to the shop</a></p>
  % end
</main>
</body>
</html>
