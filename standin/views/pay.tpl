<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>Pay {{business}} · Test mode</title>
<link rel="stylesheet" href="{{css}}">
<link rel="icon" href="data:,">
</head>
<body class="sti">
<header class="sti-top">
  % if cancel_url:
  <a class="sti-back" href="{{cancel_url}}">&larr; Back to {{business}}</a>
  % else:
  <span class="sti-business">{{business}}</span>
  % end
  <span class="sti-badge">Test mode</span>
</header>
<main class="sti-main">
  <section class="sti-summary" aria-labelledby="sti-summary-title">
    <h1 id="sti-summary-title">Pay {{business}}</h1>
    <p class="sti-due">{{summary['total']}}</p>
    <ul class="sti-items">
      % for it in items:
      <li class="sti-item">
        <span class="sti-item-name">{{it['name']}}</span>
        <span class="sti-item-qty">Qty {{it['quantity']}} &times; {{it['unit']}}</span>
        <span class="sti-item-amount">{{it['amount']}}</span>
      </li>
      % end
    </ul>
    <dl class="sti-totals">
      <div><dt>Subtotal</dt><dd>{{summary['subtotal']}}</dd></div>
      % if summary['discount'] is not None:
      <div class="sti-discount"><dt>{{summary['discount_label']}}</dt><dd>{{summary['discount']}}</dd></div>
      % end
      % if summary['shipping'] is not None:
      <div><dt>Shipping</dt><dd>{{summary['shipping']}}</dd></div>
      % end
      % if summary['tax'] is not None:
      <div><dt>{{summary['tax_label']}}</dt><dd>{{summary['tax']}}</dd></div>
      % end
      <div class="sti-total"><dt>{{"Total due" if summary['final'] else "Total before tax"}}</dt><dd>{{summary['total']}}</dd></div>
    </dl>
  </section>

  <section class="sti-pay" aria-labelledby="sti-pay-title">
    <h2 id="sti-pay-title">Contact and payment</h2>
    % card_error = error_field in ("card_number", "card_expiry", "card_cvc")  # said next to the card, in view
    % if error and not card_error:
    <div class="sti-error" role="alert" id="sti-error">{{error}}</div>
    % end
    <form method="post" action="{{action}}" class="sti-form" id="pay">
      <input type="hidden" name="pay_token" value="{{token}}">
      <input type="hidden" name="shown" value="{{shown}}">
      <fieldset>
        <legend>Contact information</legend>
        <label for="email">Email</label>
        <input id="email" name="email" type="email" autocomplete="email" required value="{{values['email']}}" aria-invalid="{{'true' if error_field == 'email' else 'false'}}" {{'aria-describedby=sti-error autofocus' if error_field == 'email' else ''}}>
        <label for="phone">Phone{{'' if phone_required else ' (optional)'}}</label>
        <input id="phone" name="phone" type="tel" autocomplete="tel" value="{{values['phone']}}" {{'required' if phone_required else ''}} aria-invalid="{{'true' if error_field == 'phone' else 'false'}}" {{'aria-describedby=sti-error autofocus' if error_field == 'phone' else ''}}>
      </fieldset>
      <fieldset>
        <legend>{{'Shipping address' if shipping else 'Billing address'}}</legend>
        <label for="name">Full name</label>
        <input id="name" name="name" autocomplete="name" required value="{{values['name']}}" aria-invalid="{{'true' if error_field == 'name' else 'false'}}" {{'aria-describedby=sti-error autofocus' if error_field == 'name' else ''}}>
        <label for="address_country">Country or region</label>
        <select id="address_country" name="address_country" autocomplete="country" required aria-invalid="{{'true' if error_field == 'address_country' else 'false'}}" {{'aria-describedby=sti-error autofocus' if error_field == 'address_country' else ''}}>
          % if len(countries) > 1:
          <option value="">Choose…</option>
          % end
          % for code in countries:
          <option value="{{code}}" {{'selected' if values['address_country'] == code else ''}}>{{code}}</option>
          % end
        </select>
        <label for="address_line1">Address line 1</label>
        <input id="address_line1" name="address_line1" autocomplete="address-line1" value="{{values['address_line1']}}" {{'required' if shipping else ''}} aria-invalid="{{'true' if error_field == 'address_line1' else 'false'}}" {{'aria-describedby=sti-error autofocus' if error_field == 'address_line1' else ''}}>
        <label for="address_line2">Address line 2 (optional)</label>
        <input id="address_line2" name="address_line2" autocomplete="address-line2" value="{{values['address_line2']}}">
        <div class="sti-row">
          <div>
            <label for="address_postal_code">Postal code</label>
            <input id="address_postal_code" name="address_postal_code" autocomplete="postal-code" value="{{values['address_postal_code']}}" {{'required' if shipping else ''}} aria-invalid="{{'true' if error_field == 'address_postal_code' else 'false'}}" {{'aria-describedby=sti-error autofocus' if error_field == 'address_postal_code' else ''}}>
          </div>
          <div>
            <label for="address_city">City</label>
            <input id="address_city" name="address_city" autocomplete="address-level2" value="{{values['address_city']}}" {{'required' if shipping else ''}} aria-invalid="{{'true' if error_field == 'address_city' else 'false'}}" {{'aria-describedby=sti-error autofocus' if error_field == 'address_city' else ''}}>
          </div>
        </div>
        <label for="address_state">State, province or region (optional)</label>
        <input id="address_state" name="address_state" autocomplete="address-level1" value="{{values['address_state']}}">
      </fieldset>
      % if options:
      <fieldset class="sti-options">
        <legend>Shipping method</legend>
        % for opt in options:
        <div class="sti-option">
          <input type="radio" id="shipping_option_{{opt['index']}}" name="shipping_option" value="{{opt['index']}}" {{'checked' if values['shipping_option'] == str(opt['index']) else ''}}>
          <label for="shipping_option_{{opt['index']}}"><span>{{opt['name']}}</span>
            % if opt['estimate']:
            <small>{{opt['estimate']}}</small>
            % end
            <strong>{{opt['amount']}}</strong></label>
        </div>
        % end
      </fieldset>
      % end
      % if tax_ids is not None:
      <fieldset>
        <legend>{{'Tax ID' if tax_id_required else 'Tax ID (optional)'}}</legend>
        <label for="tax_id_type">Type of tax ID</label>
        <select id="tax_id_type" name="tax_id_type" aria-invalid="{{'true' if error_field == 'tax_id_type' else 'false'}}" {{'aria-describedby=sti-error autofocus' if error_field == 'tax_id_type' else ''}}>
          <option value="">Choose…</option>
          % for code, label in tax_ids:
          <option value="{{code}}" {{'selected' if values['tax_id_type'] == code else ''}}>{{label}}</option>
          % end
        </select>
        <label for="tax_id_value">Tax ID{{' (required for businesses where tax IDs are supported)' if tax_id_required else ''}}</label>
        <input id="tax_id_value" name="tax_id_value" autocomplete="off" value="{{values['tax_id_value']}}" aria-invalid="{{'true' if error_field == 'tax_id_value' else 'false'}}" {{'aria-describedby=sti-error autofocus' if error_field == 'tax_id_value' else ''}}>
      </fieldset>
      % end
      % if summary['free']:
      <p class="sti-free">Nothing to pay: no card is needed.</p>
      % else:
      <fieldset>
        <legend>Card information</legend>
        % if error and card_error:
        <div class="sti-error" role="alert" id="sti-error">{{error}}</div>
        % end
        <label for="card_number">Card number</label>
        <input id="card_number" name="card_number" inputmode="numeric" autocomplete="cc-number" placeholder="1234 1234 1234 1234" required aria-invalid="{{'true' if error_field == 'card_number' else 'false'}}" {{'aria-describedby=sti-error autofocus' if error_field == 'card_number' else ''}}>
        <div class="sti-row">
          <div>
            <label for="card_expiry">Expiry (MM / YY)</label>
            <input id="card_expiry" name="card_expiry" inputmode="numeric" autocomplete="cc-exp" placeholder="MM / YY" required value="{{values['card_expiry']}}" aria-invalid="{{'true' if error_field == 'card_expiry' else 'false'}}" {{'aria-describedby=sti-error autofocus' if error_field == 'card_expiry' else ''}}>
          </div>
          <div>
            <label for="card_cvc">CVC</label>
            <input id="card_cvc" name="card_cvc" inputmode="numeric" autocomplete="cc-csc" placeholder="CVC" required aria-invalid="{{'true' if error_field == 'card_cvc' else 'false'}}" {{'aria-describedby=sti-error autofocus' if error_field == 'card_cvc' else ''}}>
          </div>
        </div>
        <label for="cardholder_name">Cardholder name</label>
        <input id="cardholder_name" name="cardholder_name" autocomplete="cc-name" value="{{values['cardholder_name']}}">
      </fieldset>
      % end
      % if terms is not None:
      <div class="sti-terms">
        <input type="checkbox" id="terms" name="terms" value="accepted" required {{'checked' if values['terms'] == 'accepted' else ''}} aria-invalid="{{'true' if error_field == 'terms' else 'false'}}" {{'aria-describedby=sti-error autofocus' if error_field == 'terms' else ''}}>
        <label for="terms">{{!terms}}</label>
      </div>
      % end
      <button type="submit" name="action" value="pay" class="sti-button">{{"Complete order" if summary['free'] else "Pay " + summary['total'] if summary['final'] else "Pay"}}</button>
      <!-- after Pay, so that Enter in a field pays (the first submit button is the form's default) -->
      % if promotion_codes:
      <div class="sti-promo">
        <label for="promotion_code">Promotion code</label>
        <div class="sti-inline">
          <input id="promotion_code" name="promotion_code" autocomplete="off" value="{{values['promotion_code']}}" aria-invalid="{{'true' if error_field == 'promotion_code' else 'false'}}" {{'aria-describedby=sti-error autofocus' if error_field == 'promotion_code' else ''}}>
          <button type="submit" name="action" value="apply_code" formnovalidate class="sti-secondary">Apply</button>
        </div>
        % if applied:
        <p class="sti-applied">{{applied}} <button type="submit" name="action" value="remove_code" formnovalidate class="sti-link">Remove</button></p>
        % end
      </div>
      % end
      <p class="sti-update"><button type="submit" name="action" value="update" formnovalidate class="sti-secondary">Update total</button> for the chosen country and shipping method, without paying.</p>
    </form>
    <section class="sti-cards" aria-labelledby="sti-cards-title">
      <h3 id="sti-cards-title">Test cards</h3>
      <p>This is a test payment page: no real money moves. Use any future expiry date and any 3-digit CVC.</p>
      <ul>
        % for number, what in test_cards:
        <li><code>{{number}}</code> {{what}}</li>
        % end
      </ul>
    </section>
  </section>
</main>
</body>
</html>
