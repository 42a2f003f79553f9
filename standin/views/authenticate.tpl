<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>Authenticate your payment · Test mode</title>
<link rel="stylesheet" href="{{css}}">
<link rel="icon" href="data:,">
</head>
<body class="sti">
<header class="sti-top"><span class="sti-business">{{business}}</span><span class="sti-badge">Test mode</span></header>
<main class="sti-main sti-message">
  <h1>3D Secure 2 test page</h1>
  <p>Your card asks you to authenticate this payment to {{business}}. This is a test 3D Secure page: no bank is asked and no real money moves.</p>
  <p>Complete authenticates the payment and pays; Fail shows what happens when authentication fails.</p>
  <form method="post" action="{{action}}" class="sti-challenge" id="authenticate">
    % for name, value in hidden:
    <input type="hidden" name="{{name}}" value="{{value}}">
    % end
    <input type="hidden" name="action" value="pay">
    <button type="submit" name="authentication" value="complete" class="sti-button">Complete</button>
    <button type="submit" name="authentication" value="fail" class="sti-secondary">Fail</button>
  </form>
</main>
</body>
</html>
