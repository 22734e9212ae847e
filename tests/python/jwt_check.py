"""An independent JWT implementation (PyJWT) judges askee consent tokens.

Usage: jwt_check.py JWKS_FILE FRESH_TOKEN_FILE EXPIRED_TOKEN_FILE NODE_KEY
Verifies the fresh token's EdDSA signature with the key its `kid` names in
the coordinator's JWKS, requires the registered claims, and refuses the
expired one for its expiry. Prints one line per verdict; exits non-zero on
any disagreement.
"""

import json
import sys

import jwt

REQUIRED = ["iss", "sub", "iat", "exp", "jti"]


def key_for(jwks, token):
    kid = jwt.get_unverified_header(token)["kid"]
    return jwks[kid].key


def main():
    jwks_file, fresh_file, expired_file, node_key = sys.argv[1:5]
    with open(jwks_file) as f:
        jwks = jwt.PyJWKSet.from_dict(json.load(f))
    fresh = open(fresh_file).read().strip()
    expired = open(expired_file).read().strip()

    claims = jwt.decode(
        fresh,
        key_for(jwks, fresh),
        algorithms=["EdDSA"],
        options={"require": REQUIRED},
    )
    if claims["sub"] != node_key or claims["sub"] != claims["subject"]:
        raise SystemExit(f"fresh token names another subject: {claims['sub']!r}")
    if claims["exp"] != claims["expires_at"] or claims["jti"] != claims["token_id"]:
        raise SystemExit(f"registered claims disagree with the payload: {claims!r}")
    print(f"fresh: verified, jti {claims['jti']}, exp {claims['exp']}")

    try:
        jwt.decode(
            expired,
            key_for(jwks, expired),
            algorithms=["EdDSA"],
            options={"require": REQUIRED},
        )
    except jwt.ExpiredSignatureError as e:
        print(f"expired: refused ({e})")
    else:
        raise SystemExit("an expired token was accepted")

    # A signature by the right key over other claims must not verify.
    head, body, sig = fresh.split(".")
    other = expired.split(".")[1]
    try:
        jwt.decode(f"{head}.{other}.{sig}", key_for(jwks, fresh), algorithms=["EdDSA"])
    except jwt.InvalidSignatureError:
        print("spliced: refused")
    else:
        raise SystemExit("a spliced token was accepted")


if __name__ == "__main__":
    main()
