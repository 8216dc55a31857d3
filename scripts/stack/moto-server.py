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
Everything else (SSM, EC2, STS, ...) is moto, untouched. Run with the
stack's venv python; see scripts/stack/README.md.
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
