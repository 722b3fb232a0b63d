#!/usr/bin/env python3
"""Helpers for rgw.sh and the smoke script (Python standard library only).

  rgw_helper.py free-port                       print a free TCP port on 127.0.0.1
  rgw_helper.py user-keys < radosgw-admin.json  print "ACCESS SECRET" of the first S3 key
  rgw_helper.py env-json OUT KEY=VALUE...       write OUT (mode 0600) from key=value pairs (keys read
                                                from env ADMIN_ACCESS_KEY/ADMIN_SECRET_KEY), print it
  rgw_helper.py sts-setup ENV_JSON ISSUER_URL AUDIENCE CERT_PEM_FILE ROLE_NAME
        create (or re-create) the OIDC provider and the role through RGW's IAM API, signed (SigV4)
        with the test user's keys from ENV_JSON (over https when its endpoint is, trusting its
        ca_file); writes DIR/sts.json and prints it
  rgw_helper.py sts-parse < AssumeRoleWithWebIdentityResponse.xml
        print {"AccessKeyId","SecretAccessKey","SessionToken","Expiration"} as JSON (exit 1 on an error
        document, printing its Code/Message on stderr)
  rgw_helper.py jwt-payload < TOKEN             print the decoded payload of a JWT (any alg)
"""
import base64
import datetime
import hashlib
import hmac
import json
import os
import socket
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET


def write_private(path, text):
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
    s.close()


def user_keys():
    info = json.load(sys.stdin)
    key = info["keys"][0]
    print(key["access_key"], key["secret_key"])


def env_json(out, pairs):
    env = {}
    pids = {}
    for pair in pairs:
        k, _, v = pair.partition("=")
        if k.startswith("pid."):
            pids[k[4:]] = int(v)
        elif v.isdigit():
            env[k] = int(v)
        else:
            try:
                env[k] = float(v) if k.endswith("_seconds") else v
            except ValueError:
                env[k] = v
    env["access_key"] = os.environ["ADMIN_ACCESS_KEY"]
    env["secret_key"] = os.environ["ADMIN_SECRET_KEY"]
    env["pids"] = pids
    text = json.dumps(env, indent=1, sort_keys=True) + "\n"
    write_private(out, text)
    sys.stdout.write(text)


# ---- SigV4 ---------------------------------------------------------------------------------------
def q(value):
    return urllib.parse.quote(str(value), safe="-_.~")


def iam_call(endpoint, access, secret, action, params, region="us-east-1", service="iam", ca_file=None):
    """POST an IAM-style form request to RGW, SigV4-signed (an https endpoint verified with ca_file, else
    the system's CAs). Returns (status, parsed XML root or None, text)."""
    fields = {"Action": action, "Version": "2010-05-08"}
    fields.update(params)
    body = "&".join("%s=%s" % (q(k), q(v)) for k, v in sorted(fields.items())).encode()
    url = urllib.parse.urlsplit(endpoint)
    host = url.netloc
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = now.strftime("%Y%m%d")
    payload_hash = hashlib.sha256(body).hexdigest()
    headers = {"content-type": "application/x-www-form-urlencoded; charset=utf-8", "host": host,
               "x-amz-content-sha256": payload_hash, "x-amz-date": amz_date}
    signed = ";".join(sorted(headers))
    canonical = "\n".join(["POST", "/", "", "".join("%s:%s\n" % (k, headers[k]) for k in sorted(headers)),
                           signed, payload_hash])
    scope = "%s/%s/%s/aws4_request" % (day, region, service)
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])

    def h(key, msg):
        return hmac.new(key, msg.encode(), hashlib.sha256).digest()

    k = h(h(h(h(("AWS4" + secret).encode(), day), region), service), "aws4_request")
    signature = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = "AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s" % (
        access, scope, signed, signature)
    req = urllib.request.Request(endpoint.rstrip("/") + "/", data=body, method="POST",
                                 headers={k: v for k, v in headers.items() if k != "host"})
    try:
        context = ssl.create_default_context(cafile=ca_file) if endpoint.startswith("https:") else None
        with urllib.request.urlopen(req, timeout=30, context=context) as resp:
            status, text = resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode("utf-8", "replace")
    try:
        root = ET.fromstring(text) if text.strip() else None
    except ET.ParseError:
        root = None
    return status, root, text


def find_all(root, tag):
    return [el.text for el in root.iter() if el.tag.split("}")[-1] == tag] if root is not None else []


def error_code(root):
    codes = find_all(root, "Code")
    return codes[0] if codes else None


def pem_thumbprint(path):
    with open(path) as f:
        pem = f.read()
    first = pem.split("-----END")[0]          # the first certificate of the file
    b64 = "".join(line for line in first.splitlines() if line and not line.startswith("-----"))
    return hashlib.sha1(base64.b64decode(b64)).hexdigest()


def strip_scheme(url):
    for prefix in ("https://", "http://"):
        if url.startswith(prefix):
            return url[len(prefix):]
    return url


def sts_setup(env_path, issuer, audience, cert_file, role):
    with open(env_path) as f:
        env = json.load(f)
    endpoint, access, secret = env["endpoint"], env["access_key"], env["secret_key"]

    def call(action, params, ok=(200,), quiet_codes=()):
        status, root, text = iam_call(endpoint, access, secret, action, params, ca_file=env.get("ca_file"))
        if status not in ok and error_code(root) not in quiet_codes:
            sys.exit("sts-setup: %s failed: HTTP %d %s" % (action, status, text.strip()[:500]))
        return status, root

    thumbprint = pem_thumbprint(cert_file)
    bare = strip_scheme(issuer)
    provider_arn = "arn:aws:iam:::oidc-provider/" + bare
    # Re-create the provider (the thumbprint may have changed).
    # RGW 16.2 answers 404 NoSuchEntity (not an empty list) when there is no provider yet.
    _, root = call("ListOpenIDConnectProviders", {}, ok=(200, 404), quiet_codes=("NoSuchEntity",))
    for arn in find_all(root, "Arn"):
        if arn == provider_arn:
            call("DeleteOpenIDConnectProvider", {"OpenIDConnectProviderArn": arn})
    _, root = call("CreateOpenIDConnectProvider", {"Url": issuer, "ClientIDList.member.1": audience,
                                                   "ThumbprintList.member.1": thumbprint})
    created_arn = (find_all(root, "OpenIDConnectProviderArn") or [provider_arn])[0]
    # Re-create the role.
    status, _ = call("GetRole", {"RoleName": role}, ok=(200, 404), quiet_codes=("NoSuchEntity",))
    if status == 200:
        _, root = call("ListRolePolicies", {"RoleName": role})
        for name in find_all(root, "member"):
            call("DeleteRolePolicy", {"RoleName": role, "PolicyName": name})
        call("DeleteRole", {"RoleName": role})
    trust = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow",
        "Principal": {"Federated": [provider_arn]},
        "Action": ["sts:AssumeRoleWithWebIdentity"],
        "Condition": {"StringEquals": {bare + ":app_id": audience}}}]}
    compact = lambda obj: json.dumps(obj, separators=(",", ":"))
    _, root = call("CreateRole", {"RoleName": role, "Path": "/", "AssumeRolePolicyDocument": compact(trust)})
    role_arn = (find_all(root, "Arn") or ["arn:aws:iam:::role/" + role])[0]
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["s3:*"],
                                                     "Resource": "arn:aws:s3:::*"}]}
    call("PutRolePolicy", {"RoleName": role, "PolicyName": role + "-s3", "PolicyDocument": compact(policy)})
    out = {"issuer": issuer, "audience": audience, "thumbprint": thumbprint, "provider_arn": created_arn,
           "role_name": role, "role_arn": role_arn, "trust_policy": trust, "role_policy": policy}
    text = json.dumps(out, indent=1) + "\n"
    write_private(os.path.join(os.path.dirname(os.path.abspath(env_path)), "sts.json"), text)
    sys.stdout.write(text)


def sts_parse():
    text = sys.stdin.read()
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        sys.exit("sts-parse: not XML: " + text.strip()[:300])
    values = {}
    for tag in ("AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration"):
        found = find_all(root, tag)
        if found:
            values[tag] = found[0]
    if "AccessKeyId" not in values:
        sys.exit("sts-parse: %s %s" % (error_code(root), (find_all(root, "Message") or [""])[0] or text.strip()[:300]))
    values["Version"] = 1
    print(json.dumps(values))


def jwt_payload():
    token = sys.stdin.read().strip()
    part = token.split(".")[1]
    print(json.dumps(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))), sort_keys=True))


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    cmd, rest = sys.argv[1], sys.argv[2:]
    if cmd == "free-port":
        free_port()
    elif cmd == "user-keys":
        user_keys()
    elif cmd == "env-json":
        env_json(rest[0], rest[1:])
    elif cmd == "sts-setup" and len(rest) == 5:
        sts_setup(*rest)
    elif cmd == "sts-parse":
        sts_parse()
    elif cmd == "jwt-payload":
        jwt_payload()
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
