#!/usr/bin/env python3
"""scripts/stack/k8s/eks-token.py --cluster NAME [--region R] [--age SECONDS] [--tamper]

Prints an EKS bearer token made the way `aws eks get-token` makes it
(awscli's customizations/eks/get_token.py): botocore presigns STS
GetCallerIdentity as a GET, with the x-k8s-aws-id header injected before
signing, ExpiresIn=60, and the URL goes base64url without padding after
`k8s-aws-v1.`. Credentials come from the usual AWS_* variables; the STS
endpoint is always the real regional one (https://sts.R.amazonaws.com),
never AWS_ENDPOINT_URL. For tests of the stack's authenticator:
  --age SECONDS  sign as if SECONDS ago (negative: in the future)
  --tamper       flip the last hex digit of X-Amz-Signature
Run with the stack's venv python.
"""

import argparse
import base64
import datetime

import botocore.auth
import botocore.session

K8S_AWS_ID_HEADER = "x-k8s-aws-id"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cluster", required=True)
    p.add_argument("--region", default="us-east-1")
    p.add_argument("--age", type=int, default=0)
    p.add_argument("--tamper", action="store_true")
    args = p.parse_args()

    if args.age:
        real = botocore.auth.get_current_datetime

        def then(*a, **kw):
            return real(*a, **kw) - datetime.timedelta(seconds=args.age)

        botocore.auth.get_current_datetime = then

    session = botocore.session.get_session()
    sts = session.create_client("sts", region_name=args.region,
                                endpoint_url=f"https://sts.{args.region}.amazonaws.com")

    def retrieve_id(params, context, **kwargs):
        if K8S_AWS_ID_HEADER in params:
            context[K8S_AWS_ID_HEADER] = params.pop(K8S_AWS_ID_HEADER)

    def inject_id(request, **kwargs):
        if K8S_AWS_ID_HEADER in request.context:
            request.headers[K8S_AWS_ID_HEADER] = request.context[K8S_AWS_ID_HEADER]

    sts.meta.events.register("provide-client-params.sts.GetCallerIdentity", retrieve_id)
    sts.meta.events.register("before-sign.sts.GetCallerIdentity", inject_id)
    url = sts.generate_presigned_url("get_caller_identity", Params={K8S_AWS_ID_HEADER: args.cluster},
                                     ExpiresIn=60, HttpMethod="GET")
    if args.tamper:
        head, sig = url.rsplit("X-Amz-Signature=", 1)
        url = f"{head}X-Amz-Signature={sig[:-1]}{'0' if sig[-1] != '0' else '1'}"
    print("k8s-aws-v1." + base64.urlsafe_b64encode(url.encode()).decode().rstrip("="))


if __name__ == "__main__":
    main()
