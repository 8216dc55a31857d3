#!/usr/bin/env python3
"""scripts/stack/moto-server.py [--eks-endpoint URL] [--eks-ca-file PEM]
                                [--eks-cluster NAME --eks-region REGION] -- MOTO_SERVER_ARGS...

moto's own server (`moto_server`), with one change to its EKS model: every
cluster it creates describes the stack's Kubernetes control plane instead of
random values. `endpoint` is --eks-endpoint, and `certificateAuthority.data`
is the base64 of the PEM in --eks-ca-file, read each time a cluster is
described (scripts/stack/k8s/up generates that CA after moto has started;
while it is missing moto's random value is kept). --eks-cluster NAME
creates that cluster at start (in --eks-region, moto's default account), so
that it exists again after every restart of this in-memory server.

The other change: with IAM enforcement on (moto's `/moto-api/reset-auth`,
as tests/it/iam.rs turns it on in a server of its own), moto checks every
request against the caller's policies but with the resource `*`, so a
statement scoped to ARNs never matches. Here SSM's parameter reads and EKS's
DescribeCluster are authorised against the ARNs AWS uses (each parameter of
GetParameters; GetParametersByPath on the path), CloudWatch's actions are
named `cloudwatch:` as in IAM (moto says `monitoring:`), and EKS's requests
skip moto's signature recomputation (it refuses the SDKs' correct ones), so
the documented policies (docs/iam/*.json) are checked as AWS checks them.
Without enforcement (the stack's shared moto) nothing changes.
Everything else (EC2, STS, ...) is moto, untouched. Run with the stack's
venv python; see scripts/stack/README.md.
"""

import argparse
import base64
import sys

from moto import server
from moto.core import DEFAULT_ACCOUNT_ID
from moto.eks import models as eks_models


def patch_eks(endpoint, ca_file):
    cluster_cls = eks_models.Cluster
    orig_init = cluster_cls.__init__

    def init(self, *args, **kwargs):
        orig_init(self, *args, **kwargs)
        if endpoint:
            self.endpoint = endpoint

    def get_ca(self):
        if ca_file:
            try:
                with open(ca_file, "rb") as f:
                    return {"data": base64.b64encode(f.read()).decode("ascii")}
            except OSError as e:
                print(f"moto-server.py: {ca_file}: {e}; describing moto's random CA", file=sys.stderr)
        return self.__dict__.get("_da_certificate_authority")

    def set_ca(self, value):
        self.__dict__["_da_certificate_authority"] = value

    cluster_cls.__init__ = init
    # moto's serializer reads the attribute when it answers, so a property
    # is read lazily, at each DescribeCluster / CreateCluster.
    cluster_cls.certificate_authority = property(get_ca, set_ca)


def patch_iam_resources():
    import json as _json

    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.eks import responses as eks_responses
    from moto.ssm import responses as ssm_responses

    def ssm_resources(self):
        try:
            body = _json.loads(self.body or "{}")
        except ValueError:
            return ["*"]
        arn = f"arn:aws:ssm:{self.region}:{self.current_account}:parameter"
        action = self._get_action()
        if action == "GetParameter":
            names = [body.get("Name", "")]
        elif action == "GetParameters":
            names = body.get("Names", [])
        elif action == "GetParametersByPath":
            names = [body.get("Path", "").rstrip("/") or "/"]
        else:
            return ["*"]
        # A name without its leading slash (a plain parameter) is still
        # parameter/<name> in its ARN.
        return [f"{arn}{n if n.startswith('/') else '/' + n}" for n in names] or ["*"]

    def ssm_authorize(self, resource="*"):
        for r in ssm_resources(self):
            ActionAuthenticatorMixin._authenticate_and_authorize_normal_action(self, r)

    ssm_responses.SimpleSystemManagerResponse._authenticate_and_authorize_normal_action = ssm_authorize

    def eks_resource(self):
        parts = [p for p in self.path.split("?")[0].split("/") if p]
        if len(parts) >= 2 and parts[0] == "clusters":
            return f"arn:aws:eks:{self.region}:{self.current_account}:cluster/{parts[1]}"
        return "*"

    eks_responses.EKSResponse._determine_resource = eks_resource

    # moto names CloudWatch's actions by its endpoint prefix (`monitoring:`);
    # IAM policies name them `cloudwatch:`.
    from moto.iam import access_control

    base_init = access_control.IAMRequestBase.__init__

    def init(self, *args, **kwargs):
        base_init(self, *args, **kwargs)
        if self._action.startswith("monitoring:"):
            self._action = "cloudwatch:" + self._action[len("monitoring:"):]

    access_control.IAMRequestBase.__init__ = init

    # moto recomputes the SigV4 signature of EKS's REST requests differently
    # from the AWS SDKs (SignatureDoesNotMatch for a correct one), so under
    # enforcement EKS requests are authorised by their access key's policies
    # without that recomputation; every other service's signature is checked.
    base_check = access_control.IAMRequestBase.check_signature

    def check_signature(self):
        if self._service == "eks":
            return
        base_check(self)

    access_control.IAMRequestBase.check_signature = check_signature


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--eks-endpoint", default="")
    p.add_argument("--eks-ca-file", default="")
    p.add_argument("--eks-cluster", default="")
    p.add_argument("--eks-region", default="us-east-1")
    args, rest = p.parse_known_args()
    if rest[:1] == ["--"]:
        rest = rest[1:]
    patch_eks(args.eks_endpoint, args.eks_ca_file)
    patch_iam_resources()
    if args.eks_cluster:
        backend = eks_models.eks_backends[DEFAULT_ACCOUNT_ID][args.eks_region]
        if args.eks_cluster not in backend.clusters:
            backend.create_cluster(
                name=args.eks_cluster,
                role_arn=f"arn:aws:iam::{DEFAULT_ACCOUNT_ID}:role/{args.eks_cluster}-cluster",
                resources_vpc_config={},
                version="1.36",
            )
    server.main(rest)


if __name__ == "__main__":
    main()
