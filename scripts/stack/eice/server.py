#!/usr/bin/env python3
"""The stack's EC2 Instance Connect Endpoint, on one port (default 127.0.0.1:5057).

- `GET /openTunnel?...` (WebSocket): the endpoint's tunnel, as `aws
  ec2-instance-connect open-tunnel` opens it. The SigV4 query signature is
  recomputed with botocore from the stack's credentials (service
  `ec2-instance-connect`, signed header `host` = the Host header received,
  payload hash of the empty body); a bad, expired (X-Amz-Date +
  X-Amz-Expires, at most 60 s here as the CLI signs) or future (> 5 min)
  signature, another access key, an unknown endpoint id or a remote port
  other than 22 is refused with 403 and a one-line reason. Then the
  WebSocket's binary frames are piped to privateIpAddress:remotePort
  (a stack host's sshd) and back.
- `POST /` with `X-Amz-Target: AWSEC2InstanceConnectService.SendSSHPublicKey`
  (JSON 1.1): the instance is looked up in moto; its private IP
  127.0.0.(K+1) is stack host K, whose `/run/eice/authorized_keys/<user>`
  gets `<expiry epoch> <key>` (60 s), read there by the
  AuthorizedKeysCommand `authorized-keys` (see host-sshd).
- `POST /` EC2 Query API: Create/Describe/DeleteInstanceConnectEndpoint(s)
  are served here (moto has no such API); every other EC2 action is passed
  to moto unchanged. Point the SDK's EC2 endpoint here
  (`AWS_ENDPOINT_URL_EC2`) to use endpoints.
- `POST /_stack/close-tunnels`: closes every open tunnel (as an endpoint
  ending tunnels at their maximum duration), answers the count.

Every decision goes to stderr (the log), never a signature or key in full.
"""

import argparse
import asyncio
import base64
import datetime
import hashlib
import hmac
import json
import os
import secrets
import sys
import time
import urllib.request
from urllib.parse import parse_qsl, quote
from xml.sax.saxutils import escape

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

DATE_FORMAT = "%Y%m%dT%H%M%SZ"
TUNNEL_PARAMS = {"instanceConnectEndpointId", "remotePort", "privateIpAddress", "maxTunnelDuration"}
AUTH_PARAMS = {"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
               "X-Amz-SignedHeaders", "X-Amz-Security-Token", "X-Amz-Signature"}
KEY_LIFETIME = 60
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
EC2_NS = "http://ec2.amazonaws.com/doc/2016-11-15/"
ACCOUNT = "123456789012"


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


class Refused(Exception):
    pass


class State:
    def __init__(self, args):
        self.args = args
        self.endpoints = {}
        self.tunnels = set()
        try:
            with open(args.state) as f:
                self.endpoints = json.load(f)
        except (OSError, ValueError):
            pass

    def save(self):
        tmp = self.args.state + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.endpoints, f)
        os.replace(tmp, self.args.state)


# --- SigV4 ------------------------------------------------------------------

def verify_presigned(state, host, query, now=None):
    """The tunnel's parameters when `query` is a valid presigned openTunnel URL for `host`."""
    pairs = parse_qsl(query, keep_blank_values=True)
    names = [k for k, _ in pairs]
    if len(names) != len(set(names)):
        raise Refused("a parameter is repeated")
    params = dict(pairs)
    unknown = set(params) - TUNNEL_PARAMS - AUTH_PARAMS
    if unknown:
        raise Refused(f"unexpected parameters {sorted(unknown)}")
    for p in ("instanceConnectEndpointId", "remotePort", "privateIpAddress", "X-Amz-Algorithm",
              "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders", "X-Amz-Signature"):
        if p not in params:
            raise Refused(f"missing {p}")
    if params["X-Amz-Algorithm"] != "AWS4-HMAC-SHA256":
        raise Refused("X-Amz-Algorithm must be AWS4-HMAC-SHA256")
    try:
        key_id, day, region, service, term = params["X-Amz-Credential"].split("/")
    except ValueError:
        raise Refused("malformed X-Amz-Credential")
    if key_id != state.args.access_key:
        raise Refused("InvalidClientTokenId: the access key is not known")
    if service != "ec2-instance-connect" or term != "aws4_request":
        raise Refused(f"credential scope names service {service!r}, not ec2-instance-connect")
    try:
        signed_at = datetime.datetime.strptime(params["X-Amz-Date"], DATE_FORMAT).replace(tzinfo=datetime.timezone.utc)
        expires = int(params["X-Amz-Expires"])
    except ValueError:
        raise Refused("malformed X-Amz-Date or X-Amz-Expires")
    if day != params["X-Amz-Date"][:8]:
        raise Refused("the credential scope's date is not X-Amz-Date's")
    if not 0 < expires <= 60:
        raise Refused("X-Amz-Expires must be 1..60")
    now = now or datetime.datetime.now(datetime.timezone.utc)
    if now > signed_at + datetime.timedelta(seconds=expires):
        raise Refused(f"the signature expired (signed {params['X-Amz-Date']}, valid {expires}s)")
    if signed_at > now + datetime.timedelta(minutes=5):
        raise Refused("the signature is dated in the future")
    if params["X-Amz-SignedHeaders"] != "host":
        raise Refused("X-Amz-SignedHeaders must be host")
    unsigned = "&".join(f"{k}={v}" for k, v in parse_qsl_raw(query) if k != "X-Amz-Signature")
    request = AWSRequest(method="GET", url=f"wss://{host}/openTunnel?{unsigned}", headers={"host": host})
    request.context["timestamp"] = params["X-Amz-Date"]
    signer = SigV4Auth(Credentials(state.args.access_key, state.args.secret_key,
                                   params.get("X-Amz-Security-Token")), "ec2-instance-connect", region)
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if not hmac.compare_digest(expected, params["X-Amz-Signature"]):
        raise Refused("SignatureDoesNotMatch: the request signature we calculated does not match the signature provided")
    eid = params["instanceConnectEndpointId"]
    if eid not in state.endpoints:
        raise Refused(f"InvalidInstanceConnectEndpointId.NotFound: {eid}")
    if state.endpoints[eid].get("region", state.args.region) != region:
        raise Refused(f"credential scope names region {region!r}, not the endpoint's")
    if params["remotePort"] != "22":
        raise Refused("remotePort must be 22 on this endpoint")
    return params


def parse_qsl_raw(query):
    """The query's pairs as sent (still percent-encoded)."""
    out = []
    for part in query.split("&"):
        if part:
            k, _, v = part.partition("=")
            out.append((k, v))
    return out


def signed_region(state, headers):
    """The region of an Authorization header's credential scope (SigV4), or the server's."""
    auth = headers.get("authorization", "")
    marker = "Credential="
    if marker in auth:
        parts = auth.split(marker, 1)[1].split(",", 1)[0].split("/")
        if len(parts) == 5 and parts[2]:
            return parts[2]
    return state.args.region


def signed_key_id(headers):
    """The access key of an Authorization header (SigV4), or None."""
    auth = headers.get("authorization", "")
    marker = "Credential="
    if marker not in auth:
        return None
    return auth.split(marker, 1)[1].split("/", 1)[0]


# --- HTTP -------------------------------------------------------------------

async def read_request(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    body = b""
    n = int(headers.get("content-length", "0") or 0)
    if n:
        body = await reader.readexactly(n)
    return method, target, headers, body


def response(status, body=b"", ctype="text/plain", extra=()):
    if isinstance(body, str):
        body = body.encode()
    reason = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 500: "Internal Server Error"}.get(status, "X")
    head = [f"HTTP/1.1 {status} {reason}", f"Content-Type: {ctype}", f"Content-Length: {len(body)}",
            "Connection: close", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def handle(state, reader, writer):
    try:
        method, target, headers, body = await read_request(reader)
    except (asyncio.IncompleteReadError, ValueError, ConnectionError, asyncio.LimitOverrunError):
        writer.close()
        return
    path, _, query = target.partition("?")
    try:
        if method == "GET" and path == "/openTunnel":
            await tunnel(state, reader, writer, headers, query)
            return
        if method == "POST" and path == "/_stack/close-tunnels":
            n = len(state.tunnels)
            for t in list(state.tunnels):
                t.cancel()
            log(f"closed {n} tunnel(s) on request")
            writer.write(response(200, f"{n}\n"))
        elif method == "POST" and headers.get("x-amz-target", "").endswith(".SendSSHPublicKey"):
            writer.write(await send_ssh_public_key(state, headers, body))
        elif method == "POST":
            writer.write(await ec2(state, target, headers, body))
        elif method == "GET" and path == "/healthz":
            writer.write(response(200, "ok\n"))
        else:
            writer.write(response(404, "not found\n"))
        await writer.drain()
    except Exception as e:  # a bug here must not kill the server
        log(f"ERROR {method} {path}: {e!r}")
        try:
            writer.write(response(500, f"{e}\n"))
            await writer.drain()
        except Exception:
            pass
    finally:
        writer.close()


# --- the tunnel ---------------------------------------------------------------

async def tunnel(state, reader, writer, headers, query):
    host = headers.get("host", "")
    try:
        if headers.get("upgrade", "").lower() != "websocket" or "sec-websocket-key" not in headers:
            raise Refused("not a WebSocket upgrade")
        params = verify_presigned(state, host, query)
    except Refused as e:
        log(f"DENY tunnel host={host}: {e}")
        writer.write(response(403, f"{e}\n"))
        await writer.drain()
        writer.close()
        return
    ip, port = params["privateIpAddress"], int(params["remotePort"])
    if not ip.startswith("127."):
        log(f"DENY tunnel to {ip}: not a stack address")
        writer.write(response(403, "privateIpAddress is not in the endpoint's VPC\n"))
        await writer.drain()
        writer.close()
        return
    try:
        up_r, up_w = await asyncio.wait_for(asyncio.open_connection(ip, port), 5)
    except (OSError, asyncio.TimeoutError) as e:
        log(f"FAIL tunnel to {ip}:{port}: {e}")
        writer.write(response(500, f"could not connect to {ip}:{port}\n"))
        await writer.drain()
        writer.close()
        return
    accept = base64.b64encode(hashlib.sha1((headers["sec-websocket-key"] + WS_GUID).encode()).digest()).decode()
    writer.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode())
    await writer.drain()
    limit = int(params.get("maxTunnelDuration") or 3600)
    log(f"ALLOW tunnel {params['instanceConnectEndpointId']} -> {ip}:{port} (max {limit}s)")
    task = asyncio.current_task()
    state.tunnels.add(task)
    started = time.monotonic()
    try:
        await asyncio.wait_for(pipe(reader, writer, up_r, up_w), limit)
    except (asyncio.TimeoutError, asyncio.CancelledError):
        pass
    finally:
        state.tunnels.discard(task)
        for w in (up_w, writer):
            try:
                w.close()
            except Exception:
                pass
        log(f"END tunnel -> {ip}:{port} after {time.monotonic() - started:.1f}s")


async def pipe(reader, writer, up_r, up_w):
    async def client_to_host():
        while True:
            opcode, payload = await read_frame(reader)
            if opcode == 0x8:
                return
            if opcode == 0x9:
                writer.write(frame(0xA, payload))
                continue
            if opcode in (0x0, 0x1, 0x2):
                up_w.write(payload)
                await up_w.drain()

    async def host_to_client():
        while True:
            data = await up_r.read(65000)
            if not data:
                return
            writer.write(frame(0x2, data))
            await writer.drain()

    tasks = [asyncio.ensure_future(client_to_host()), asyncio.ensure_future(host_to_client())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
    try:
        writer.write(frame(0x8, b"\x03\xe8"))
        await writer.drain()
    except Exception:
        pass


async def read_frame(reader):
    b0, b1 = await reader.readexactly(2)
    opcode, masked, n = b0 & 0x0F, b1 & 0x80, b1 & 0x7F
    if n == 126:
        n = int.from_bytes(await reader.readexactly(2), "big")
    elif n == 127:
        n = int.from_bytes(await reader.readexactly(8), "big")
    mask = await reader.readexactly(4) if masked else None
    payload = await reader.readexactly(n)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return opcode, payload


def frame(opcode, payload):
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 127]) + n.to_bytes(8, "big")
    return head + payload


# --- SendSSHPublicKey ---------------------------------------------------------

def json_error(kind, message, status=400):
    return response(status, json.dumps({"__type": kind, "Message": message}), "application/x-amz-json-1.1")


async def send_ssh_public_key(state, headers, body):
    if signed_key_id(headers) != state.args.access_key:
        log("DENY SendSSHPublicKey: unknown access key")
        return json_error("AccessDeniedException", "the access key is not known", 403)
    try:
        req = json.loads(body or b"{}")
        instance, user, key = req["InstanceId"], req["InstanceOSUser"], req["SSHPublicKey"]
    except (ValueError, KeyError) as e:
        return json_error("InvalidArgsException", f"missing {e}")
    if not key.startswith(("ssh-ed25519 ", "ssh-rsa ")) or "\n" in key:
        return json_error("InvalidArgsException", "SSHPublicKey must be one ssh-ed25519 or ssh-rsa key")
    if not user or "/" in user or user.startswith("."):
        return json_error("InvalidArgsException", "bad InstanceOSUser")
    ip = await asyncio.to_thread(instance_ip, state, instance, signed_region(state, headers))
    if ip is None:
        log(f"DENY SendSSHPublicKey {instance}: not found")
        return json_error("EC2InstanceNotFoundException", f"Instance {instance} not found")
    k = int(ip.split(".")[3]) - 1
    d = os.path.join(state.args.stack_dir, "hosts", f"h{k}", "fs", "run", "eice", "authorized_keys")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, user)
    now = int(time.time())
    kept = []
    try:
        with open(path) as f:
            kept = [l for l in f.read().splitlines() if l.split(" ", 1)[0].isdigit() and int(l.split(" ", 1)[0]) > now]
    except OSError:
        pass
    kept.append(f"{now + KEY_LIFETIME} {key.strip()}")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(kept) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    log(f"ALLOW SendSSHPublicKey {instance} ({ip}, host h{k}) user={user} key=...{key.strip()[-12:]} for {KEY_LIFETIME}s")
    return response(200, json.dumps({"RequestId": secrets.token_hex(16), "Success": True}), "application/x-amz-json-1.1")


def moto_ec2(state, query, region=None):
    """An EC2 Query call of our own to moto (which routes by the Authorization header's service, and by its region)."""
    auth = (f"AWS4-HMAC-SHA256 Credential={state.args.access_key}/20260101/{region or state.args.region}/ec2/aws4_request, "
            "SignedHeaders=host, Signature=0")
    return moto(state, "/", {"content-type": "application/x-www-form-urlencoded; charset=utf-8", "authorization": auth},
                f"{query}&Version=2016-11-15".encode())


def instance_ip(state, instance, region=None):
    """The running instance's private IP, from moto (EC2 Query API)."""
    status, _, data = moto_ec2(state, f"Action=DescribeInstances&InstanceId.1={quote(instance)}", region)
    if status != 200:
        return None
    text = data.decode()
    marker = "<privateIpAddress>"
    if marker not in text:
        return None
    return text.split(marker, 1)[1].split("<", 1)[0]


def moto(state, target, headers, body):
    req = urllib.request.Request(state.args.moto + target, data=body, method="POST")
    for k, v in headers.items():
        if k not in ("host", "content-length", "connection"):
            req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


# --- EC2: Instance Connect Endpoints (the rest goes to moto) -----------------

async def ec2(state, target, headers, body):
    form = dict(parse_qsl(body.decode()))
    action = form.get("Action", "")
    if action in ("CreateInstanceConnectEndpoint", "DescribeInstanceConnectEndpoints", "DeleteInstanceConnectEndpoint"):
        if signed_key_id(headers) != state.args.access_key:
            return ec2_error("AuthFailure", "the access key is not known", 401)
        serve = {
            "CreateInstanceConnectEndpoint": create_endpoint,
            "DescribeInstanceConnectEndpoints": describe_endpoints,
            "DeleteInstanceConnectEndpoint": delete_endpoint,
        }[action]
        return await asyncio.to_thread(serve, state, form, signed_region(state, headers))
    if action == "GetConsoleOutput" and signed_key_id(headers) == state.args.access_key:
        served = await asyncio.to_thread(console_output, state, form.get("InstanceId", ""), signed_region(state, headers))
        if served is not None:
            return served
    status, rheaders, data = await asyncio.to_thread(moto, state, target, headers, body)
    ctype = rheaders.get("Content-Type", "text/xml") if rheaders else "text/xml"
    return response(status, data, ctype)


def console_output(state, instance, region):
    """GetConsoleOutput of an instance at a stack host's address: a boot log
    with the host's real SSH host keys between cloud-init's markers, as EC2
    shows an instance's first boot (a file $STACK_DIR/eice/console/<ip>,
    written by a test, replaces the whole text). Other instances: moto's."""
    ip = instance_ip(state, instance, region)
    if ip is None or not ip.startswith("127.0.0."):
        return None
    k = int(ip.split(".")[3]) - 1
    override = os.path.join(state.args.stack_dir, "eice", "console", ip)
    try:
        with open(override) as f:
            text = f.read()
    except OSError:
        try:
            with open(os.path.join(state.args.stack_dir, "hosts", f"h{k}", "ssh", "ssh_host_ed25519_key.pub")) as f:
                key = " ".join(f.read().split()[:2])
        except OSError:
            return None
        text = (f"[    0.000000] Linux version 6.1.0 (stack host h{k})\r\n"
                f"ci-info: ++++++++Authorized keys from /home/ec2-user/.ssh/authorized_keys for user ec2-user++++++++\r\n"
                f"<14>Dec  7 00:00:00 cloud-init: #############################################################\r\n"
                f"-----BEGIN SSH HOST KEY FINGERPRINTS-----\r\n256 SHA256:(stack) root@h{k} (ED25519)\r\n"
                f"-----END SSH HOST KEY FINGERPRINTS-----\r\n"
                f"-----BEGIN SSH HOST KEY KEYS-----\r\n{key} root@h{k}\r\n-----END SSH HOST KEY KEYS-----\r\n"
                f"Cloud-init finished\r\n")
    log(f"ALLOW GetConsoleOutput {instance} ({ip}, host h{k})")
    output = base64.b64encode(text.encode()).decode()
    return ec2_ok("GetConsoleOutput", f"<instanceId>{escape(instance)}</instanceId>"
                                      f"<timestamp>{time.strftime('%Y-%m-%dT%H:%M:%S.000Z', time.gmtime())}</timestamp>"
                                      f"<output>{output}</output>")


def ec2_error(code, message, status=400):
    return response(status, f'<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>{code}</Code>'
                            f"<Message>{escape(message)}</Message></Error></Errors><RequestID>{secrets.token_hex(8)}</RequestID></Response>",
                    "text/xml")


def eice_xml(e):
    return ("<ownerId>%s</ownerId><instanceConnectEndpointId>%s</instanceConnectEndpointId>"
            "<instanceConnectEndpointArn>arn:aws:ec2:%s:%s:instance-connect-endpoint/%s</instanceConnectEndpointArn>"
            "<state>%s</state><stateMessage></stateMessage><dnsName>%s</dnsName><fipsDnsName>%s</fipsDnsName>"
            "<networkInterfaceIdSet><item>eni-%s</item></networkInterfaceIdSet><vpcId>%s</vpcId>"
            "<availabilityZone>%s</availabilityZone><createdAt>%s</createdAt><subnetId>%s</subnetId>"
            "<preserveClientIp>false</preserveClientIp><securityGroupIdSet></securityGroupIdSet><tagSet></tagSet>") % (
        ACCOUNT, e["id"], e["region"], ACCOUNT, e["id"], e["state"], e["dns"], e["dns"].replace(".ec2-", ".fips.ec2-"),
        e["id"][5:], e["vpc"], e["az"], e["created"], e["subnet"])


def ec2_ok(action, inner):
    return response(200, f'<?xml version="1.0" encoding="UTF-8"?><{action}Response xmlns="{EC2_NS}">'
                         f"<requestId>{secrets.token_hex(8)}</requestId>{inner}</{action}Response>", "text/xml")


def create_endpoint(state, form, region):
    subnet = form.get("SubnetId", "")
    status, _, data = moto_ec2(state, f"Action=DescribeSubnets&SubnetId.1={quote(subnet)}", region)
    text = data.decode()
    if status != 200 or "<vpcId>" not in text:
        return ec2_error("InvalidSubnetID.NotFound", f"The subnet ID '{subnet}' does not exist")
    vpc = text.split("<vpcId>", 1)[1].split("<", 1)[0]
    az = text.split("<availabilityZone>", 1)[1].split("<", 1)[0] if "<availabilityZone>" in text else region + "a"
    eid = "eice-" + secrets.token_hex(9)[:17]
    e = {"id": eid, "region": region, "state": "create-complete", "vpc": vpc, "subnet": subnet, "az": az,
         "dns": f"{eid}.{secrets.token_hex(4)}.ec2-instance-connect-endpoint.{region}.amazonaws.com",
         "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")}
    state.endpoints[eid] = e
    state.save()
    log(f"created {eid} in {vpc}/{subnet}")
    return ec2_ok("CreateInstanceConnectEndpoint",
                  f"<instanceConnectEndpoint>{eice_xml(e)}</instanceConnectEndpoint><clientToken>{escape(form.get('ClientToken', ''))}</clientToken>")


def filters(form):
    out = {}
    i = 1
    while f"Filter.{i}.Name" in form:
        vals, j = [], 1
        while f"Filter.{i}.Value.{j}" in form:
            vals.append(form[f"Filter.{i}.Value.{j}"])
            j += 1
        out[form[f"Filter.{i}.Name"]] = vals
        i += 1
    return out


def describe_endpoints(state, form, region):
    ids, i = [], 1
    while f"InstanceConnectEndpointId.{i}" in form:
        ids.append(form[f"InstanceConnectEndpointId.{i}"])
        i += 1
    fs = filters(form)
    keys = {"state": "state", "vpc-id": "vpc", "instance-connect-endpoint-id": "id", "subnet-id": "subnet"}
    for name in fs:
        if name not in keys:
            return ec2_error("InvalidParameterValue", f"The filter '{name}' is invalid")
    here = {k: e for k, e in state.endpoints.items() if e.get("region", state.args.region) == region}
    missing = [x for x in ids if x not in here]
    if missing:
        return ec2_error("InvalidInstanceConnectEndpointId.NotFound", f"The instance connect endpoint ID '{missing[0]}' does not exist")
    found = [e for e in here.values()
             if (not ids or e["id"] in ids) and all(e[keys[n]] in v for n, v in fs.items())]
    items = "".join(f"<item>{eice_xml(e)}</item>" for e in sorted(found, key=lambda e: e["created"]))
    return ec2_ok("DescribeInstanceConnectEndpoints", f"<instanceConnectEndpointSet>{items}</instanceConnectEndpointSet>")


def delete_endpoint(state, form, region):
    eid = form.get("InstanceConnectEndpointId", "")
    e = state.endpoints.pop(eid, None)
    if e is None:
        return ec2_error("InvalidInstanceConnectEndpointId.NotFound", f"The instance connect endpoint ID '{eid}' does not exist")
    state.save()
    e = dict(e, state="delete-complete")
    log(f"deleted {eid}")
    return ec2_ok("DeleteInstanceConnectEndpoint", f"<instanceConnectEndpoint>{eice_xml(e)}</instanceConnectEndpoint>")


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", default="127.0.0.1:5057")
    ap.add_argument("--moto", default=os.environ.get("AWS_ENDPOINT_URL", "http://127.0.0.1:5055"))
    ap.add_argument("--stack-dir", default=os.environ.get("STACK_DIR", ""))
    ap.add_argument("--state", required=True)
    ap.add_argument("--region", default=os.environ.get("AWS_REGION", "us-east-1"))
    args = ap.parse_args()
    args.access_key = os.environ["AWS_ACCESS_KEY_ID"]
    args.secret_key = os.environ["AWS_SECRET_ACCESS_KEY"]
    state = State(args)
    host, port = args.listen.rsplit(":", 1)
    server = await asyncio.start_server(lambda r, w: handle(state, r, w), host, int(port), limit=1 << 16)
    log(f"instance connect endpoint on {args.listen} (moto {args.moto})")
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
