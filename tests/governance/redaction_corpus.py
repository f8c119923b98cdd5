"""The redaction corpus: positives per detector and locale, and a benign corpus.

Shared by the tests (recall >= 99% per detector, false positives <= 1%) and by
``benchmarks/redaction_quality.py`` (which reports both per detector). Every
positive is a sentence holding one sensitive value; it counts as found when
the value is gone and the expected kind's placeholder is there. Valid numbers
come from the libraries' own data and check-digit functions (phonenumbers'
example numbers for every region, stdnum's check digits), from a seeded
random generator, so the corpus is the same on every run.

The benign corpus is what agent traffic carries that must survive: code,
UUIDs, timestamps, hashes, version strings, prices, order and tracking
numbers, measurements, paths and URLs. Four-part versions whose parts are all
<= 255 (``1.0.0.0``) are included even though the IPv4 detector redacts them
by design: they are part of real text and count as false positives.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re
import string
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import phonenumbers
from stdnum import iban, luhn, verhoeff
from stdnum.br import cpf
from stdnum.es import dni, nie
from stdnum.fr import nir
from stdnum.iso7064 import mod_11_10
from stdnum.it import codicefiscale
from stdnum.util import get_cc_module

SEED = 20


@dataclass(frozen=True)
class Positive:
    kind: str
    label: str  # locale or variant
    text: str
    secret: str


def found(redacted: str, positive: Positive) -> bool:
    return positive.secret not in redacted and f"[REDACTED:{positive.kind}]" in redacted


# --- generators of valid values -------------------------------------------------------
_STRUCT = re.compile(r"(\d+)!?([nac])")
_CHARSETS = {"n": string.digits, "a": string.ascii_uppercase,
             "c": string.ascii_uppercase + string.digits}
# Countries whose BBAN has no national check of its own (stdnum has no module for it),
# so a random BBAN of the right structure plus mod-97 digits is a valid IBAN.
IBAN_COUNTRIES = tuple(
    cc for cc in ("AD", "AE", "AT", "BG", "BH", "CH", "CY", "CZ", "DE", "DK", "FI", "GB",
                  "GR", "HR", "HU", "IE", "IL", "IS", "LT", "LU", "LV", "NL", "PL", "PT",
                  "RO", "SA", "SE", "SI", "SK", "TR", "UA")
    if get_cc_module(cc, "iban") is None)


def valid_iban(rng: random.Random, country: str) -> str:
    structure = iban._ibandb.info(country)[0][1]["bban"]
    bban = "".join(rng.choice(_CHARSETS[kind]) for count, kind in _STRUCT.findall(structure)
                   for _ in range(int(count)))
    check = iban.calc_check_digits(country + "00" + bban)
    return country + check + bban


def group(text: str, size: int = 4, separator: str = " ") -> str:
    return separator.join(text[i:i + size] for i in range(0, len(text), size))


CARD_PREFIXES = ("4", "51", "52", "53", "54", "55", "2221", "2720", "34", "37", "6011", "65",
                 "3528", "3589", "36", "300")


def valid_card(rng: random.Random, prefix: str) -> str:
    length = 15 if prefix in ("34", "37") else 14 if prefix in ("36", "300") else 16
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    return body + luhn.calc_check_digit(body)


def card_layout(number: str, separator: str) -> str:
    if len(number) == 15:
        return separator.join((number[:4], number[4:10], number[10:]))
    if len(number) == 14:
        return separator.join((number[:4], number[4:10], number[10:]))
    return group(number, 4, separator)


def valid_ssn(rng: random.Random, separator: str) -> str:
    area = rng.choice([a for a in range(1, 900) if a != 666])
    return f"{area:03d}{separator}{rng.randint(1, 99):02d}{separator}{rng.randint(1, 9999):04d}"


def valid_dni(rng: random.Random) -> str:
    body = f"{rng.randint(0, 99_999_999):08d}"
    return body + dni.calc_check_digit(body)


def valid_nie(rng: random.Random) -> str:
    body = rng.choice("XYZ") + f"{rng.randint(0, 9_999_999):07d}"
    return body + nie.calc_check_digit(body)


def valid_nir(rng: random.Random) -> str:
    body = (f"{rng.choice('12')}{rng.randint(0, 99):02d}{rng.randint(1, 12):02d}"
            f"{rng.randint(1, 95):02d}{rng.randint(1, 990):03d}{rng.randint(1, 999):03d}")
    key = nir.calc_check_digits(body)
    return f"{body[0]} {body[1:3]} {body[3:5]} {body[5:7]} {body[7:10]} {body[10:13]} {key}"


_MONTHS = "ABCDEHLMPRST"


def valid_codice_fiscale(rng: random.Random) -> str:
    letters = "".join(rng.choice(string.ascii_uppercase) for _ in range(6))
    day = rng.randint(1, 28) + rng.choice((0, 40))
    body = (f"{letters}{rng.randint(0, 99):02d}{rng.choice(_MONTHS)}{day:02d}"
            f"{rng.choice(string.ascii_uppercase)}{rng.randint(100, 999)}")
    return body + codicefiscale.calc_check_digit(body)


def valid_cpf(rng: random.Random) -> str:
    body = f"{rng.randint(100_000_000, 999_999_999)}"
    number = body + cpf._calc_check_digits(body)
    return f"{number[:3]}.{number[3:6]}.{number[6:9]}-{number[9:]}"


def valid_aadhaar(rng: random.Random) -> str:
    body = str(rng.randint(2, 9)) + "".join(rng.choice(string.digits) for _ in range(10))
    return group(body + verhoeff.calc_check_digit(body), 4, " ")


_NINO_FIRST = "ABCEGHJKLMNOPRSTWXYZ"
_NINO_SECOND = "ABCEGHJKLMNPRSTWXYZ"


def valid_nino(rng: random.Random) -> str:
    while True:
        prefix = rng.choice(_NINO_FIRST) + rng.choice(_NINO_SECOND)
        if prefix not in {"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"}:
            break
    digits = f"{rng.randint(0, 999_999):06d}"
    return f"{prefix} {digits[:2]} {digits[2:4]} {digits[4:]} {rng.choice('ABCD')}"


def valid_de_vat(rng: random.Random) -> str:
    body = str(rng.randint(1, 9)) + f"{rng.randint(0, 9_999_999):07d}"
    return "DE" + body + mod_11_10.calc_check_digit(body)


def random_token(rng: random.Random, alphabet: str, length: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(length))


ALNUM = string.ascii_letters + string.digits
B64 = ALNUM + "/+"


def aws_secret(rng: random.Random) -> str:
    while True:
        key = random_token(rng, B64, 40)
        if (any(c.isupper() for c in key) and any(c.islower() for c in key)
                and any(c.isdigit() for c in key)):
            return key


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def jwt(rng: random.Random) -> str:
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64url(json.dumps({"sub": str(rng.randint(1, 10**9)), "iat": 1_700_000_000
                                 + rng.randint(0, 10**6)}).encode())
    return f"{header}.{payload}.{b64url(rng.randbytes(32))}"


# --- positives per detector and locale ----------------------------------------------------
CONTEXTS = (
    "Please contact me at {} about the refund.",
    "{}",
    "Customer record: name=Jane, value={}, status=active",
    '{{"field": "{}", "verified": true}}',
    "The value ({}) was entered twice.",
    "line one\nvalue: {}\nline three",
)


def _sentence(rng: random.Random, value: str) -> str:
    return rng.choice(CONTEXTS).format(value)


def phone_positives(rng: random.Random) -> Iterator[Positive]:
    pn = phonenumbers
    kinds = (pn.PhoneNumberType.FIXED_LINE, pn.PhoneNumberType.MOBILE)
    for region in sorted(pn.SUPPORTED_REGIONS):
        for number_type in kinds:
            number = pn.example_number_for_type(region, number_type)
            if number is None or not pn.is_valid_number(number):
                continue
            intl = pn.format_number(number, pn.PhoneNumberFormat.INTERNATIONAL)
            e164 = pn.format_number(number, pn.PhoneNumberFormat.E164)
            for label, text in ((f"{region} international", intl), (f"{region} E.164", e164),
                                (f"{region} 00 prefix", "00" + intl[1:])):
                yield Positive("phone", label, _sentence(rng, text), text)
    from spanguard.redaction import DEFAULT_PHONE_REGIONS

    for region in DEFAULT_PHONE_REGIONS:
        for number_type in kinds:
            number = pn.example_number_for_type(region, number_type)
            if number is None:
                continue
            national = pn.format_number(number, pn.PhoneNumberFormat.NATIONAL)
            yield Positive("phone", f"{region} national", _sentence(rng, national), national)
    # A bare digit run is a phone only next to a phone word (documented in phones.py).
    for text in ("4155550100", "6135550110", "2125550147", "02079460958", "0301234567"):
        for template in ("call me at {}", "Phone: {}", '{{"phone": "{}"}}', "tel {}",
                         "my mobile number is {}"):
            yield Positive("phone", "bare with a phone word", template.format(text), text)
    for text in ("415-555-0100", "415.555.0100", "(415) 555-0100",
                 "1-800-555-0199", "1 (212) 555-0147", "+1 416 555 0123",
                 "020 7946 0958", "0161 496 0000", "030 123456", "089 12345678",
                 "0171 1234567", "01 23 45 67 89", "06 12 34 56 78", "03-1234-5678",
                 "090-1234-5678", "0044 20 7946 0958", "0049 30 123456", "0033 1 23 45 67 89",
                 "+44 (0)20 7946 0958", "030/1234567", "+81 3-1234-5678", "+49 (30) 123456"):
        yield Positive("phone", "written form", _sentence(rng, text), text)


def number_positives(rng: random.Random) -> Iterator[Positive]:
    for country in IBAN_COUNTRIES:
        for _ in range(3):
            value = valid_iban(rng, country)
            for label, text in ((f"{country} compact", value),
                                (f"{country} grouped", group(value)),
                                (f"{country} lower case", group(value).lower()),
                                (f"{country} dashes", group(value, 4, "-"))):
                yield Positive("iban", label, _sentence(rng, text), text)
    for prefix in CARD_PREFIXES:
        for separator in ("", " ", "-", ".", "  "):
            for _ in range(3):
                number = valid_card(rng, prefix)
                text = card_layout(number, separator) if separator else number
                yield Positive("payment_card", f"{prefix} sep {separator!r}",
                               _sentence(rng, text), text)
    for separator in ("-", " "):
        for _ in range(40):
            text = valid_ssn(rng, separator)
            yield Positive("us_ssn", f"US sep {separator!r}", _sentence(rng, text), text)
    for _ in range(40):
        text = valid_nino(rng)
        yield Positive("uk_nino", "GB", _sentence(rng, text), text)
        yield Positive("uk_nino", "GB compact", _sentence(rng, text.replace(" ", "")),
                       text.replace(" ", ""))
    for _ in range(40):
        for label, text in (("ES DNI", valid_dni(rng)), ("ES NIE", valid_nie(rng))):
            yield Positive("es_dni", label, _sentence(rng, text), text)
        text = valid_nir(rng)
        yield Positive("fr_nir", "FR spaced", _sentence(rng, text), text)
        yield Positive("fr_nir", "FR compact", _sentence(rng, text.replace(" ", "")),
                       text.replace(" ", ""))
        text = valid_codice_fiscale(rng)
        yield Positive("it_codice_fiscale", "IT", _sentence(rng, text), text)
        text = valid_cpf(rng)
        yield Positive("br_cpf", "BR", _sentence(rng, text), text)
        text = valid_aadhaar(rng)
        yield Positive("in_aadhaar", "IN", _sentence(rng, text), text)
        text = valid_de_vat(rng)
        yield Positive("vat_number", "DE", _sentence(rng, text), text)
    for text in ("ATU13585627", "BE0203430576", "ESB58378431", "FR40303265045",
                 "IT00743110157", "NL004495445B01", "PL5260250274", "GB980780684",
                 "SE556188840401", "DK13585628", "FI20774740", "IE6388047V"):
        yield Positive("vat_number", text[:2], _sentence(rng, text), text)


def address_positives(rng: random.Random) -> Iterator[Positive]:
    fixed = ("jane.doe@example.com", "JANE.DOE+billing@Example.CO.UK", "o'brien@example.ie",
             "first_last-1@mail.sub.example.org", '"john doe"@example.com',
             '"very.unusual.@.unusual.com"@example.com', "josé@exämple.de", "ñandú@correo.es",
             "用户@例子.中国", "пользователь@пример.рф", "info@xn--bcher-kva.de",
             "jane@bücher.de", "admin@[192.0.2.1]", "user%relay@example.com",
             "x@example.museum", "δοκιμή@παράδειγμα.δοκιμή")
    for text in fixed:
        yield Positive("email", "form", _sentence(rng, text), text)
    for _ in range(150):
        local = random_token(rng, string.ascii_lowercase + string.digits, rng.randint(1, 12))
        if rng.random() < 0.3:
            local += "." + random_token(rng, string.ascii_lowercase, rng.randint(1, 8))
        domain = random_token(rng, string.ascii_lowercase, rng.randint(2, 12))
        tld = rng.choice(("com", "org", "net", "io", "de", "co.uk", "fr", "jp", "dev"))
        text = f"{local}@{domain}.{tld}"
        yield Positive("email", "generated", _sentence(rng, text), text)
    for _ in range(60):
        text = ".".join(str(rng.randint(0, 255)) for _ in range(4))
        yield Positive("ipv4", "generated", _sentence(rng, text), text)
        text = ":".join(f"{rng.randint(0, 65535):x}" for _ in range(8))
        yield Positive("ipv6", "full", _sentence(rng, text), text)
    for text in ("2001:db8::8a2e:370:7334", "::1", "fe80::1ff:fe23:4567:890a", "2001:db8::1",
                 "::ffff:192.0.2.128"):
        yield Positive("ipv6", "compressed", _sentence(rng, text), text)


def secret_positives(rng: random.Random) -> Iterator[Positive]:
    for _ in range(30):
        key = aws_secret(rng)
        yield Positive("aws_secret_access_key", "alone", f"the secret is {key} keep it", key)
        yield Positive("aws_secret_access_key", "JSON SecretAccessKey",
                       json.dumps({"AccessKeyId": "ASIA" + random_token(
                           rng, string.ascii_uppercase + string.digits, 16),
                           "SecretAccessKey": key}), key)
        yield Positive("aws_secret_access_key", "env",
                       f"export AWS_SECRET_ACCESS_KEY={key}", key)
        key_id = "AKIA" + random_token(rng, string.ascii_uppercase + string.digits, 16)
        yield Positive("aws_access_key_id", "AKIA", f"aws_access_key_id={key_id}", key_id)
        token = random_token(rng, ALNUM + "-._~+/", rng.randint(20, 60)) + rng.choice(
            string.digits)
        for label, scheme in (("Bearer", "Bearer"), ("BEARER capitals", "BEARER"),
                              ("bearer lower", "bearer")):
            yield Positive("bearer_token", label, f"Authorization: {scheme} {token}", token)
        user = random_token(rng, string.ascii_lowercase, 6)
        password = random_token(rng, ALNUM + "!$%", 12)
        credential = base64.b64encode(f"{user}:{password}".encode()).decode()
        yield Positive("basic_auth", "header", f"Authorization: Basic {credential}", credential)
        yield Positive("basic_auth", "URL",
                       f"connect to postgres://{user}:{password}@db.internal:5432/app",
                       f"{user}:{password}")
        token = jwt(rng)
        yield Positive("jwt", "JWT", f"Cookie: session={token}; path=/", token)
        yield Positive("credential", "JSON password",
                       json.dumps({"username": user, "password": password}), password)
        yield Positive("credential", "env", f"DB_PASSWORD={password}x1 ./run.sh",
                       f"{password}x1")
        yield Positive("credential", "YAML quoted", f"client_secret: '{password}'", password)
    providers = {
        "openai_api_key": lambda: "sk-proj-" + random_token(rng, ALNUM + "_-", 48),
        "anthropic_api_key": lambda: "sk-ant-api03-" + random_token(rng, ALNUM + "_-", 80),
        "github_token": lambda: "ghp_" + random_token(rng, ALNUM, 36),
        "gitlab_token": lambda: "glpat-" + random_token(rng, ALNUM + "_-", 20),
        "slack_token": lambda: "xoxb-" + random_token(rng, string.digits, 12) + "-"
                               + random_token(rng, ALNUM, 24),
        "google_api_key": lambda: "AIza" + random_token(rng, ALNUM + "_-", 35),
        "stripe_key": lambda: "sk_live_" + random_token(rng, ALNUM, 24),
        "huggingface_token": lambda: "hf_" + random_token(rng, ALNUM, 34),
        "npm_token": lambda: "npm_" + random_token(rng, ALNUM, 36),
        "pypi_token": lambda: "pypi-AgEIcHlwaS5vcmc" + random_token(rng, ALNUM + "_-", 60),
        "sendgrid_key": lambda: "SG." + random_token(rng, ALNUM + "_-", 22) + "."
                                + random_token(rng, ALNUM + "_-", 43),
    }
    for kind, make in providers.items():
        for _ in range(20):
            value = make()
            yield Positive(kind, "provider", _sentence(rng, value), value)
    for name in ("RSA", "EC", "OPENSSH", "ENCRYPTED", "DSA"):
        body = "\n".join(random_token(rng, B64, 64) for _ in range(4))
        block = f"-----BEGIN {name} PRIVATE KEY-----\n{body}\n-----END {name} PRIVATE KEY-----"
        yield Positive("private_key", name, f"key file:\n{block}\n", block)


def positives() -> list[Positive]:
    rng = random.Random(SEED)
    return [*phone_positives(rng), *number_positives(rng), *address_positives(rng),
            *secret_positives(rng)]


# --- the benign corpus ------------------------------------------------------------------------
CODE = (
    "def add(a: int, b: int) -> int:\n    return a + b",
    "for i in range(1, 10):\n    total += i * 2",
    "result = np.dot(weights, inputs) + bias  # shape (32, 128)",
    "const port = process.env.PORT || 8080;",
    "SELECT id, created_at FROM orders WHERE total > 100.50 LIMIT 25;",
    "git commit -m 'fix: handle 404 from /api/v2/users'",
    "docker run -p 5432:5432 -v pgdata:/var/lib/postgresql/data postgres:16.2",
    "pip install 'requests>=2.31,<3' numpy==1.26.4",
    "if (x >= 0 && x < 255) { buffer[x] = 0xFF; }",
    "matrix = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]",
    "std::vector<int> v(10, 0); auto it = v.begin();",
    "password = os.environ['DB_PASSWORD']",
    "token: str | None = None",
    "api_key = get_api_key(config)",
    "ls -la /var/log/nginx/access.log.1",
    "curl -s https://api.example.com/v1/items?page=2&per_page=50",
    "kubectl scale deployment web --replicas=3",
    "x = 3.14159265358979; y = 2.71828182845904",
    "model.fit(X_train, y_train, epochs=20, batch_size=64)",
    "@app.route('/users/<int:user_id>')",
    "assert response.status_code == 200, response.text",
    "CREATE INDEX idx_orders_customer ON orders (customer_id, created_at DESC);",
    "chmod 0644 config.yaml && chown 1000:1000 config.yaml",
    "while read -r line; do echo \"$line\"; done < input.txt",
    "timeout = aiohttp.ClientTimeout(total=30, connect=5)",
    "ERROR 2024-03-01T12:00:00Z worker-3 retry 2/5 after 1500 ms",
    "const re = /^[a-z0-9_-]{3,16}$/;",
    "Password: Please choose a strong one.",
    "The secret to good bread is time.",
    "max_tokens=1024, temperature=0.7, top_p=0.95",
    "git clone git@github.com:acme/widgets.git",
    "Error 0x80070005: access denied (HRESULT)",
    "HTTP/1.1 200 OK\r\nContent-Length: 348",
    "uid=1000(ubuntu) gid=1000(ubuntu) groups=1000(ubuntu),27(sudo)",
    "sort -t, -k2,2n data.csv | head -n 100",
    '"dependencies": {"react": "^18.2.0", "lodash": "~4.17.21"}',
    "DOI 10.5281/zenodo.1234567",
    "ISBN 978-0-306-40615-7 and ISBN 0-306-40615-2",
    "The SSN field is required; enter digits only.",
    "Call stack depth 10 exceeded at frame 0x7ffee3b0",
)
PROSE = (
    "The meeting moved to room 4.12 on the third floor.",
    "We shipped 1,250 units in Q3, up 12% from Q2.",
    "Chapter 11 starts on page 245.",
    "The bearer of this note may collect the parcel.",
    "Flight LH 441 departs at 10:35 from gate B22.",
    "Mix 250 g flour with 2 eggs and 125 ml milk.",
    "The marathon record is 2:00:35.",
    "Temperatures reached 38.5 °C on 14 July.",
    "Population: 8 336 817 (2022 estimate).",
    "Basic plan includes 5 users and 10 GB storage.",
)


def _benign_generated(rng: random.Random) -> Iterator[tuple[str, str]]:
    for _ in range(120):
        yield "uuid", f"request {uuid.UUID(int=rng.getrandbits(128), version=4)} failed"
    for _ in range(40):
        yield "uuid", str(uuid.UUID(int=rng.getrandbits(128), version=4)).upper()
    for _ in range(60):
        year, month, day = rng.randint(2000, 2030), rng.randint(1, 12), rng.randint(1, 28)
        hour, minute, second = rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59)
        micro = rng.randint(0, 999_999)
        yield "timestamp", f"{year}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}Z"
        yield "timestamp", (f"{year}-{month:02d}-{day:02d} {hour:02d}:{minute:02d}:"
                            f"{second:02d}.{micro:06d}")
        yield "timestamp", f"{day:02d}.{month:02d}.{year} {hour:02d}:{minute:02d}"
        yield "timestamp", f"{month:02d}/{day:02d}/{year}"
        yield "timestamp", f"epoch {rng.randint(1_000_000_000, 1_900_000_000)}"
        yield "timestamp", f"ts_ms={rng.randint(1_000_000_000_000, 1_900_000_000_000)}"
    for _ in range(60):
        data = rng.randbytes(32)
        yield "hash", hashlib.md5(data).hexdigest()
        yield "hash", "sha1 " + hashlib.sha1(data).hexdigest()
        yield "hash", "sha256:" + hashlib.sha256(data).hexdigest()
        yield "hash", f"commit {hashlib.sha1(data).hexdigest()[:7]} on main"
        yield "hash", "integrity sha512-" + base64.b64encode(hashlib.sha512(data).digest()
                                                              ).decode()
        yield "hash", "etag " + base64.b64encode(hashlib.sha256(data).digest()).decode()
    for _ in range(60):
        major, minor, patch = rng.randint(0, 30), rng.randint(0, 40), rng.randint(0, 200)
        yield "version", f"version {major}.{minor}.{patch}"
        yield "version", f"v{major}.{minor}.{patch}-rc.{rng.randint(1, 5)}"
        yield "version", f"python {major % 4}.{minor}.{patch}rc1"
        yield "version", f"build {major}.{minor}.{rng.randint(1000, 30000)}.{patch}"
    for version in ("1.0.0.0", "4.0.0.0", "2.1.0.0", "10.0.19045.3803", "120.0.6099.109"):
        yield "version", f"assembly version {version}"
    for _ in range(60):
        amount = rng.randint(1, 999_999) / 100
        yield "price", f"${amount:,.2f}"
        yield "price", f"{amount:,.2f} EUR".replace(",", " ")
        yield "price", f"€ {amount:.2f}".replace(".", ",")
        yield "price", f"¥{rng.randint(100, 9_999_999):,}"
        yield "price", f"total: {rng.randint(1, 99_999)}.{rng.randint(0, 99):02d} USD"
    for _ in range(60):
        yield "order", f"ORD-{rng.randint(2015, 2026)}-{rng.randint(0, 999_999):06d}"
        yield "order", f"order #{rng.randint(100_000, 9_999_999)}"
        yield "order", f"PO {rng.randint(4_500_000_000, 4_599_999_999)}"
        yield "order", (f"{rng.randint(100, 999)}-{rng.randint(1_000_000, 9_999_999)}-"
                        f"{rng.randint(1_000_000, 9_999_999)}")
        yield "order", f"invoice INV/{rng.randint(2015, 2026)}/{rng.randint(1, 99_999):05d}"
        yield "order", f"ticket JIRA-{rng.randint(1, 99_999)}"
        yield "order", f"tracking 1Z{random_token(rng, string.ascii_uppercase + string.digits, 16)}"
    for _ in range(40):
        yield "measure", f"{rng.randint(1, 999)}.{rng.randint(0, 9)} km in {rng.randint(1, 59)} min"
        yield "measure", f"lat {rng.uniform(-90, 90):.6f}, lon {rng.uniform(-180, 180):.6f}"
        yield "measure", f"{rng.randint(1, 4096)} MB of {rng.randint(4097, 65536)} MB used"
        yield "measure", f"p95 latency {rng.randint(1, 999)}.{rng.randint(0, 99)} ms"
    for _ in range(60):
        body = "".join(rng.choice(string.digits) for _ in range(12))
        check = (10 - sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(body)) % 10) % 10
        yield "order", f"EAN {body}{check}"
        yield "order", f"FedEx tracking {rng.randint(10**11, 10**12 - 1)}"
        yield "order", f"customer id {rng.randint(10**8, 10**9 - 1)}"
    for _ in range(40):
        a, b, c = rng.randint(1, 99), rng.randint(1, 999), rng.randint(0, 99999)
        yield "path", f"/home/user/projects/app-{a}/src/main.py:{b}"
        yield "path", f"https://docs.example.com/v{a % 9}/guide#section-{b}"
        yield "path", f"s3://bucket-{b}/data/2024/part-{c:05d}.parquet"


def benign() -> list[tuple[str, str]]:
    """(category, text) pairs that must pass through unchanged."""
    rng = random.Random(SEED)
    items = [("code", text) for text in CODE] + [("prose", text) for text in PROSE]
    items.extend(_benign_generated(rng))
    return items

