"""Who may sign in, and how: authentication backends, login lockout, API token lifetimes, HTTPS and cookies."""
from datetime import timedelta

from brain_connectors.settings.environment import DEBUG, env

# --- Auth, permissions -----------------------------------------------------------------------
AUTHENTICATION_BACKENDS = [
    # First: django-axes' lockout check must refuse before any backend accepts the right password.
    "brain_connectors.access.login.LockoutBackend",
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
ANONYMOUS_USER_NAME = None  # guardian: no anonymous user row; anonymous requests are refused anyway
LOGIN_URL = "/admin/login/"
GUARDIAN_RAISE_403 = False

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# How long emailed links work (seconds). A reset link is asked for and used at once: 1 hour. An
# invitation waits in someone's inbox: 3 days. Either stops working once the password is set.
PASSWORD_RESET_TIMEOUT = env.int("PASSWORD_RESET_TIMEOUT", default=60 * 60)
INVITATION_TIMEOUT = env.int("INVITATION_TIMEOUT", default=3 * 24 * 60 * 60)

API_TOKEN_DEFAULT_TTL_DAYS = env.int("API_TOKEN_DEFAULT_TTL_DAYS", default=90)
API_TOKEN_MAX_TTL_DAYS = env.int("API_TOKEN_MAX_TTL_DAYS", default=3650)

# --- Login protection (django-axes; glue and audit in access/login.py) -----------------------
# /admin/login/ and /accounts/login/ refuse every attempt, the right password included, once an
# account has LOGIN_FAILURE_LIMIT failures from any addresses, or an address has as many on any
# accounts, within LOGIN_COOLOFF_MINUTES of the latest. Per account stops distributed guessing;
# per address stops spraying one password over many accounts. The price: anyone can lock a known
# username for that long. Unlock at once: manage.py axes_reset_username <name> / axes_reset_ip <ip>.
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.float("LOGIN_COOLOFF_MINUTES", default=15.0))
AXES_LOCKOUT_PARAMETERS = ["ip_address", "username"]
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"  # shared by every process
# No reset on success: signing in to any account of one's own would also wipe the failures counted
# against one's address, and against the account under attack from that address.
AXES_RESET_ON_SUCCESS = False
# Attempts refused during a lockout neither restart it nor append to axes' attempt rows, which
# would otherwise grow with every request an attacker makes.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_LOCKOUT_CALLABLE = "brain_connectors.access.login.lockout_response"  # 429, Retry-After, a page in plain words
AXES_CLIENT_IP_CALLABLE = "brain_connectors.access.ip.client_ip"
AXES_VERBOSE = False  # no start-up banner on every manage.py command; failures are still logged
# How many reverse proxies in front of the app append to X-Forwarded-For. 0: the client is
# REMOTE_ADDR, and X-Forwarded-For (which anyone can send) is ignored for lockouts and throttles.
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)

# --- HTTPS and cookies (production defaults when DEBUG is off) --------------------------------
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env.bool("BEHIND_TLS_PROXY", default=False) else None
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=not DEBUG)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
# healthz/readyz are probed over plain HTTP by load balancers inside the deployment.
SECURE_REDIRECT_EXEMPT = [r"^healthz\Z", r"^readyz\Z"]  # Django uses re.search: `$` would also take "healthz\n"
