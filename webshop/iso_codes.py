"""Currency and country code tables that catalog validation and money formatting check against."""

# Stripe's presentment currencies, lowercase ISO 4217: https://docs.stripe.com/currencies#presentment-currencies
CURRENCIES = frozenset("""
usd aed afn all amd ang aoa ars aud awg azn bam bbd bdt bgn bhd bif bmd bnd bob brl bsd bwp byn bzd
cad cdf chf clp cny cop crc cve czk djf dkk dop dzd egp etb eur fjd fkp gbp gel gip gmd gnf gtq gyd
hkd hnl htg huf idr ils inr isk jmd jod jpy kes kgs khr kmf krw kwd kyd kzt lak lbp lkr lrd lsl mad
mdl mga mkd mmk mnt mop mur mvr mwk mxn myr mzn nad ngn nio nok npr nzd omr pab pen pgk php pkr pln
pyg qar ron rsd rub rwf sar sbd scr sek sgd shp sle sos srd std szl thb tjs tnd top try ttd twd tzs
uah ugx uyu uzs vnd vuv wst xaf xcd xcg xof xpf yer zar zmw
""".split())

# Amounts in these are whole units (¥500 is 500): https://docs.stripe.com/currencies#zero-decimal
ZERO_DECIMAL = frozenset("bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split())

# Amounts in these have three decimals and must end in 0: https://docs.stripe.com/currencies#three-decimal
THREE_DECIMAL = frozenset("bhd jod kwd omr tnd".split())

# Two-decimal, but only whole units can be charged (multiples of 100): https://docs.stripe.com/currencies#special-cases
WHOLE_UNITS_ONLY = frozenset({"isk"})

# ISO 3166-1 alpha-2 country codes (officially assigned).
COUNTRIES = frozenset("""
AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT
BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH
ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT
HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS
LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI
NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG
SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG
UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW
""".split())

# ISO codes that Checkout's shipping_address_collection.allowed_countries does not accept.
# https://docs.stripe.com/api/checkout/sessions/create#create_checkout_session-shipping_address_collection-allowed_countries
NOT_SHIPPABLE = frozenset("AS CC CU CX FM HM IR KP MH MP NF PW SY UM VI".split())

# Not ISO 3166-1 codes but seen in shipping lists, with the code meant (EL is the EU's own code for Greece).
COUNTRY_HINTS = {"UK": "GB", "EL": "GR"}
