#!/usr/bin/env python3
"""Keys, JWKS documents and tokens made by PyJWT and `cryptography`, for proxy/tests/tokens.rs:
interop judged by a JWT implementation no one here wrote.

Usage:
  jwt_tool.py keys DIR                  RSA 2048 (rsa1, rsa2) and EC P-256 (ec1, ec2) key pairs:
                                        DIR/NAME.pem (private, PKCS#8) and DIR/NAME.pub (SPKI)
  jwt_tool.py jwks OUT KID=PUBFILE...   a JWKS of those public keys under those kids, written
                                        atomically to OUT
  jwt_tool.py mint ALG KEY CLAIMS [KID] a token: ALG HS256 (KEY: the secret), RS256 or ES256
                                        (KEY: a private key file); CLAIMS: JSON; KID a,b,c:
                                        one token per kid, one a line

Exits 3 when PyJWT or cryptography is missing (pip install pyjwt cryptography).
"""

import json
import os
import sys

try:
    import jwt
    from jwt.algorithms import ECAlgorithm, RSAAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
except ImportError as e:  # pragma: no cover - reported to the Rust test
    print(f"missing dependency: {e} (pip install pyjwt cryptography)")
    sys.exit(3)


def keys(directory):
    os.makedirs(directory, exist_ok=True)
    made = {
        "rsa1": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "rsa2": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ec1": ec.generate_private_key(ec.SECP256R1()),
        "ec2": ec.generate_private_key(ec.SECP256R1()),
    }
    for name, key in made.items():
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        with open(os.path.join(directory, f"{name}.pem"), "wb") as f:
            f.write(private)
        with open(os.path.join(directory, f"{name}.pub"), "wb") as f:
            f.write(public)


def jwks(out, pairs):
    entries = []
    for pair in pairs:
        kid, path = pair.split("=", 1)
        with open(path, "rb") as f:
            public = serialization.load_pem_public_key(f.read())
        algorithm = RSAAlgorithm if isinstance(public, rsa.RSAPublicKey) else ECAlgorithm
        entry = json.loads(algorithm.to_jwk(public))
        entry.update({"kid": kid, "use": "sig"})
        entries.append(entry)
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"keys": entries}, f)
    os.replace(tmp, out)


def mint(alg, key, claims, kid=None):
    if alg != "HS256":
        with open(key) as f:
            key = f.read()
    for one in kid.split(",") if kid else [None]:
        headers = {"kid": one} if one else None
        print(jwt.encode(json.loads(claims), key, algorithm=alg, headers=headers))


def main():
    command, args = sys.argv[1], sys.argv[2:]
    if command == "keys":
        keys(args[0])
    elif command == "jwks":
        jwks(args[0], args[1:])
    elif command == "mint":
        mint(*args)
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
