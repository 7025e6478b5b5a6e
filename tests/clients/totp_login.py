"""Logs in to Tessera with a second factor computed by the public `pyotp` package, an authenticator independent
of Tessera's own TOTP code: enroll, confirm, password → challenge → code → tokens, and a replayed code refused.

Run by the Rust test `python_clients::a_real_totp_generator_logs_in`, which passes TESSERA_BASE_URL,
TESSERA_ADMIN_EMAIL and TESSERA_ADMIN_PASSWORD. Exits non-zero with a message on the first mismatch.
"""

import os
import sys
import time

import pyotp
import requests


def check(condition, message):
    if not condition:
        print("FAILED: " + message, file=sys.stderr)
        sys.exit(1)


def main():
    base = os.environ["TESSERA_BASE_URL"].rstrip("/")
    email, password = os.environ["TESSERA_ADMIN_EMAIL"], os.environ["TESSERA_ADMIN_PASSWORD"]
    session = requests.post(base + "/v1/login", json={"email": email, "password": password}).json()
    auth = {"Authorization": "Bearer " + session["access_token"]}

    enrollment = requests.post(base + "/v1/me/totp", headers=auth).json()
    totp = pyotp.parse_uri(enrollment["otpauth_uri"])
    check(totp.secret == enrollment["secret"], "the URI carries the secret")
    check(totp.interval == 30 and totp.digits == 6, "30-second steps, 6 digits")
    confirmed = requests.post(base + "/v1/me/totp/confirm", headers=auth, json={"code": totp.now()})
    check(confirmed.status_code == 200, "confirm: %s %s" % (confirmed.status_code, confirmed.text))

    # The confirmation used this step's code: wait for the next step so the login code is fresh.
    time.sleep(30 - time.time() % 30 + 0.5)
    form = {"grant_type": "password", "username": email, "password": password, "client_id": "web"}
    challenge = requests.post(base + "/login", data=form).json()
    check("MfaUid" in challenge and "UserId" in challenge, "a challenge, not tokens: %r" % challenge)
    code = totp.now()
    mfa = {"grant_type": "mfa", "client_id": "web", "mfa_uid": challenge["MfaUid"],
           "user_id": challenge["UserId"], "code": code}
    tokens = requests.post(base + "/login", data=mfa)
    check(tokens.status_code == 200 and "access_token" in tokens.json(), "login with the code: %s" % tokens.text)

    challenge = requests.post(base + "/login", data=form).json()
    mfa.update({"mfa_uid": challenge["MfaUid"], "user_id": challenge["UserId"]})
    replay = requests.post(base + "/login", data=mfa)
    check(replay.status_code == 400 and replay.json()["error"] == "invalid_grant", "a replayed code: %s" % replay.text)
    print("totp login: all checks passed")


if __name__ == "__main__":
    main()
