#!/usr/bin/env python3
"""scripts/stack/k8s/eks-authenticator.py CONFIG.json

The test stack's stand-in for EKS's aws-iam-authenticator: a webhook token
authenticator (TokenReview, authentication.k8s.io/v1) for kube-apiserver's
--authentication-token-webhook-config-file. It takes EKS bearer tokens,

    k8s-aws-v1.<base64url, no padding, of a SigV4 query-presigned URL>
    https://sts[.REGION].amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15
        &X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKID/YYYYMMDD/REGION/sts/aws4_request
        &X-Amz-Date=YYYYMMDDTHHMMSSZ&X-Amz-Expires=60&X-Amz-SignedHeaders=host;x-k8s-aws-id
        [&X-Amz-Security-Token=...]&X-Amz-Signature=HEX

with the header `x-k8s-aws-id: <cluster name>` signed, and checks them as
aws-iam-authenticator's pkg/token Verify does (same order, same limits), but
instead of sending the URL to STS it recomputes the SigV4 signature with
botocore from the stack's known test credentials: there is no STS here, and
moto's STS does not check signatures. A token is valid for 15 minutes after
its X-Amz-Date whatever X-Amz-Expires says (0..900 is only range-checked),
as with real STS. Every decision goes to stdout (the token and its signature
never do: a token is named by a SHA-256 prefix). See scripts/stack/README.md.

CONFIG (written by scripts/stack/k8s/up):
  {"listen": "127.0.0.1:16444", "cert": PEM, "key": PEM, "cluster": NAME,
   "lifetime_seconds": 900, "max_future_seconds": 300,
   "principals": {ACCESS_KEY_ID: {"secret_access_key": S, "arn": ARN,
       "account": ID, "user_id": AIDA..., "username": U, "groups": [G...]}}}
"""

import base64
import binascii
import datetime
import hashlib
import hmac
import json
import re
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

V1_PREFIX = "k8s-aws-v1."
MAX_TOKEN_LEN = 4096
CLUSTER_ID_HEADER = "x-k8s-aws-id"
SIGNED_HEADERS = "host;x-k8s-aws-id"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"
# aws-iam-authenticator's parameterWhitelist.
ALLOWED_PARAMS = {
    "action", "version", "x-amz-algorithm", "x-amz-credential", "x-amz-date",
    "x-amz-expires", "x-amz-security-token", "x-amz-signature", "x-amz-signedheaders",
}
# sts.amazonaws.com (global, signed for us-east-1), sts.REGION.amazonaws.com,
# and the FIPS / dual-stack forms aws-iam-authenticator also resolves.
HOST_RE = re.compile(r"^sts(?:-fips)?\.([a-z0-9](?:[a-z0-9-]*[a-z0-9])?)\.(?:amazonaws\.com|api\.aws)$")


class Denied(Exception):
    """A token that is not valid; the message goes to status.error and the log."""


def host_region(host):
    if host == "sts.amazonaws.com":
        return "us-east-1"
    m = HOST_RE.match(host)
    if not m:
        raise Denied(f"unexpected hostname {host!r} in pre-signed URL (want sts.amazonaws.com or sts.<region>.amazonaws.com)")
    return m.group(1)


def signature_for(host, params, principal_key, secret, session_token, region, timestamp, cluster, unsigned_payload=False):
    """The SigV4 signature of GET https://HOST/?PARAMS with the x-k8s-aws-id header, via botocore."""
    request = AWSRequest(method="GET", url=f"https://{host}/", params=params, headers={CLUSTER_ID_HEADER: cluster})
    request.context["timestamp"] = timestamp
    if unsigned_payload:
        request.context["payload_signing_enabled"] = False
    signer = SigV4Auth(Credentials(principal_key, secret, session_token), "sts", region)
    canonical = signer.canonical_request(request)
    return signer.signature(signer.string_to_sign(request, canonical), request)


class Verifier:
    def __init__(self, config):
        self.cluster = config["cluster"]
        self.lifetime = datetime.timedelta(seconds=int(config.get("lifetime_seconds", 900)))
        self.max_future = datetime.timedelta(seconds=int(config.get("max_future_seconds", 300)))
        self.principals = config["principals"]

    def verify(self, token, facts, now=None):
        """Returns the TokenReview status.user of a valid token, else raises Denied.
        Fills FACTS (dict) with loggable details as they are learnt."""
        now = now or datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
        if len(token) > MAX_TOKEN_LEN:
            raise Denied(f"token is too large ({len(token)} > {MAX_TOKEN_LEN} bytes)")
        if not token.startswith(V1_PREFIX):
            raise Denied(f"token is missing the {V1_PREFIX!r} prefix (not an EKS token)")
        body = token[len(V1_PREFIX):]
        try:
            if "=" in body:
                raise ValueError("padding")
            raw = base64.b64decode(body + "=" * (-len(body) % 4), altchars=b"-_", validate=True)
            url = raw.decode("utf-8")
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise Denied("token is not base64url (no padding) of a URL")
        parts = urlsplit(url)
        if parts.scheme != "https":
            raise Denied(f"unexpected scheme {parts.scheme!r} in pre-signed URL (want https)")
        facts["host"] = parts.netloc
        region = host_region(parts.netloc)
        if parts.path != "/":
            raise Denied(f"unexpected path {parts.path!r} in pre-signed URL (want /)")
        if parts.fragment:
            raise Denied("unexpected fragment in pre-signed URL")
        try:
            pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=True)
        except ValueError:
            raise Denied("malformed query in pre-signed URL")
        q = {}
        for key, value in pairs:
            lk = key.lower()
            if lk not in ALLOWED_PARAMS:
                raise Denied(f"non-whitelisted query parameter {key!r}")
            if lk in q:
                raise Denied(f"duplicate query parameter {key!r}")
            q[lk] = value
        if q.get("action") != "GetCallerIdentity":
            raise Denied(f"unexpected Action {q.get('action')!r} in pre-signed URL (want GetCallerIdentity)")
        if q.get("version") != "2011-06-15":
            raise Denied(f"unexpected Version {q.get('version')!r} in pre-signed URL (want 2011-06-15)")
        if q.get("x-amz-algorithm") != "AWS4-HMAC-SHA256":
            raise Denied(f"unexpected X-Amz-Algorithm {q.get('x-amz-algorithm')!r} (want AWS4-HMAC-SHA256)")
        signed = [h.lower() for h in q.get("x-amz-signedheaders", "").split(";")]
        if CLUSTER_ID_HEADER not in signed:
            raise Denied(f"client did not sign the {CLUSTER_ID_HEADER} header in the pre-signed URL")
        if ";".join(signed) != SIGNED_HEADERS:
            raise Denied(f"X-Amz-SignedHeaders is {q['x-amz-signedheaders']!r}; this verifier knows only {SIGNED_HEADERS!r}")
        try:
            expires = int(q.get("x-amz-expires", ""))
        except ValueError:
            expires = -1
        if not 0 <= expires <= 900:
            raise Denied(f"invalid X-Amz-Expires {q.get('x-amz-expires')!r} in pre-signed URL (want 0..900)")
        date = q.get("x-amz-date", "")
        facts["date"] = date
        try:
            signed_at = datetime.datetime.strptime(date, DATE_FORMAT)
        except ValueError:
            raise Denied(f"X-Amz-Date {date!r} is missing or not {DATE_FORMAT}")
        expiry = signed_at + self.lifetime
        if now > expiry:
            raise Denied(f"token expired at {expiry:%Y-%m-%dT%H:%M:%SZ} (X-Amz-Date {date} + "
                         f"{self.lifetime.seconds // 60} min; now {now:%Y-%m-%dT%H:%M:%SZ})")
        if signed_at > now + self.max_future:
            raise Denied(f"X-Amz-Date {date} is more than {self.max_future.seconds} s in the future "
                         f"(now {now:%Y-%m-%dT%H:%M:%SZ})")
        scope = q.get("x-amz-credential", "").split("/")
        if len(scope) != 5:
            raise Denied("X-Amz-Credential is not AKID/DATE/REGION/sts/aws4_request")
        akid, scope_date, scope_region, scope_service, terminator = scope
        facts["akid"] = akid
        if scope_date != date[:8] or scope_service != "sts" or terminator != "aws4_request":
            raise Denied(f"X-Amz-Credential scope {'/'.join(scope[1:])!r} does not match "
                         f"{date[:8]}/<region>/sts/aws4_request")
        if scope_region != region:
            raise Denied(f"X-Amz-Credential region {scope_region!r} is not the region of {parts.netloc} ({region})")
        principal = self.principals.get(akid)
        if principal is None:
            raise Denied(f"unknown access key id {akid!r} (the stack knows {sorted(self.principals)})")
        given = q.get("x-amz-signature", "")
        params = [(k, v) for k, v in pairs if k.lower() != "x-amz-signature"]
        args = (parts.netloc, params, akid, principal["secret_access_key"], q.get("x-amz-security-token"),
                region, date, self.cluster)
        if not hmac.compare_digest(signature_for(*args).encode(), given.lower().encode()):
            hint = ""
            if hmac.compare_digest(signature_for(*args, unsigned_payload=True).encode(), given.lower().encode()):
                hint = ("; it does match with UNSIGNED-PAYLOAD as the payload hash: STS wants the SHA-256 "
                        "of the empty body (e3b0c442...) in the canonical request")
            raise Denied(f"signature does not match for cluster {self.cluster!r}: the token was altered, signed "
                         f"with another secret key, or is for another cluster (x-k8s-aws-id is signed, not sent)"
                         f"{hint}")
        user_id = principal["user_id"]
        account = principal["account"]
        arn = principal["arn"]
        return {
            "username": principal.get("username", arn),
            "uid": f"aws-iam-authenticator:{account}:{user_id}",
            "groups": principal["groups"],
            # The extra fields aws-iam-authenticator sets.
            "extra": {
                "arn": [arn],
                "canonicalArn": [arn],
                "sessionName": [""],
                "accessKeyId": [akid],
                "principalId": [user_id],
                "sigs.k8s.io/aws-iam-authenticator/principalId": [user_id],
            },
        }


LOG_LOCK = threading.Lock()


def log(msg):
    with LOG_LOCK:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"
        print(f"{stamp} {msg}", flush=True)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the apiserver reuses its connection
    verifier = None

    def log_message(self, format, *args):  # the decisions are logged instead
        pass

    def reply(self, code, body, ctype="application/json"):
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if urlsplit(self.path).path == "/healthz":
            self.reply(200, "ok", "text/plain")
        else:
            self.reply(404, "not found\n", "text/plain")

    def do_POST(self):
        # The apiserver adds ?timeout=...
        if urlsplit(self.path).path != "/authenticate":
            log(f"bad request: POST {urlsplit(self.path).path} (want /authenticate)")
            self.reply(404, "not found\n", "text/plain")
            return
        try:
            n = int(self.headers.get("Content-Length", "0"))
            if not 0 < n <= 64 * 1024:
                raise ValueError(f"Content-Length {n}")
            review = json.loads(self.rfile.read(n))
            token = review["spec"]["token"]
            if not isinstance(token, str):
                raise ValueError("spec.token is not a string")
        except (ValueError, KeyError, TypeError) as e:
            log(f"bad request: expected a TokenReview with spec.token ({e})")
            self.reply(400, "expected a TokenReview with spec.token\n", "text/plain")
            return
        facts = {"token": "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:12]}
        status = {"authenticated": False}
        try:
            status = {"authenticated": True, "user": self.verifier.verify(token, facts)}
            outcome = f"ALLOW user={status['user']['username']} groups={','.join(status['user']['groups'])}"
        except Denied as e:
            status["error"] = str(e)
            outcome = f"DENY {e}"
        except Exception as e:  # a bug here must not look like a valid token
            status["error"] = f"internal error: {type(e).__name__}"
            outcome = f"DENY internal error: {e!r}"
        log(f"{outcome} [cluster={self.verifier.cluster} "
            + " ".join(f"{k}={v}" for k, v in facts.items()) + "]")
        self.reply(200, {
            "apiVersion": review.get("apiVersion", "authentication.k8s.io/v1"),
            "kind": "TokenReview",
            "status": status,
        })


def main():
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} CONFIG.json")
    with open(sys.argv[1]) as f:
        config = json.load(f)
    Handler.verifier = Verifier(config)
    host, port = config["listen"].rsplit(":", 1)
    server = ThreadingHTTPServer((host, int(port)), Handler)
    server.daemon_threads = True
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(config["cert"], config["key"])
    # The handshake happens in the connection's thread, at its first read.
    server.socket = ctx.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    log(f"listening on https://{config['listen']} for cluster {config['cluster']!r}, "
        f"principals {sorted(config['principals'])}")
    server.serve_forever()


if __name__ == "__main__":
    main()
