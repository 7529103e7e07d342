#!/usr/bin/env python3
"""A medsettle client in Python (grpcio): create a region, enrol a person with a personal
account, deposit, read the balance from the ledger and verify the books.

    pip install grpcio grpcio-tools
    python3 examples/python/client.py --target 127.0.0.1:50051 --token "$(cat operator.token)"

Stubs are generated from proto/ into examples/python/gen/ (or $MEDSETTLE_STUBS_DIR) on first use
(grpc_tools ships protoc).
"""
import argparse
import os
import pathlib
import sys
import uuid

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
# Where the generated stubs go (tests point it at a temporary folder of their own).
GEN = pathlib.Path(os.environ.get("MEDSETTLE_STUBS_DIR", HERE / "gen"))


def generate_stubs():
    from grpc_tools import protoc

    GEN.mkdir(parents=True, exist_ok=True)
    protos = sorted(str(p.relative_to(ROOT / "proto")) for p in (ROOT / "proto").rglob("*.proto"))
    args = ["protoc", f"-I{ROOT / 'proto'}", f"--python_out={GEN}", f"--grpc_python_out={GEN}", *protos]
    if protoc.main(args) != 0:
        sys.exit("stub generation failed")


def check_digit(body17):
    weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
    return "10X98765432"[sum(int(d) * w for d, w in zip(body17, weights)) % 11]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", default=os.environ.get("MEDSETTLE_TARGET", "127.0.0.1:50051"))
    ap.add_argument("--token", default=os.environ.get("MEDSETTLE_TOKEN"), required="MEDSETTLE_TOKEN" not in os.environ)
    ap.add_argument("--region", default="150300")
    args = ap.parse_args()

    if not (GEN / "medsettle" / "v1" / "registry_pb2.py").exists():
        generate_stubs()
    sys.path.insert(0, str(GEN))
    import grpc
    from medsettle.v1 import common_pb2, ledger_pb2, ledger_pb2_grpc, registry_pb2, registry_pb2_grpc

    auth = [("authorization", f"Bearer {args.token}")]
    channel = grpc.insecure_channel(args.target)
    registry = registry_pb2_grpc.RegistryServiceStub(channel)
    ledger = ledger_pb2_grpc.LedgerServiceStub(channel)

    try:
        region = registry.CreateRegion(
            registry_pb2.CreateRegionRequest(request_id=str(uuid.uuid4()), code=args.region), metadata=auth)
        print("created region", region.code, region.name)
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise
        print("region", args.region, "exists")

    seq = uuid.uuid4().int % 1000
    body = f"{args.region[:4]}0219800101{seq:03d}"
    enrol = registry_pb2.EnrolPersonRequest(
        request_id=str(uuid.uuid4()),
        national_id=body + check_digit(body),
        name="王五",
        home_region=args.region,
        insurances=[registry_pb2.PersonInsurance(
            insurance_type=common_pb2.INSURANCE_TYPE_EMPLOYEE, category=common_pb2.PERSON_CATEGORY_RETIRED)],
        opening_balance="1000.00",
    )
    try:
        person = registry.EnrolPerson(enrol, metadata=auth)
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise
        person = registry.GetPerson(registry_pb2.GetPersonRequest(national_id=enrol.national_id), metadata=auth)
    print("person", person.psn_no, "balance", person.account_balance)

    dep_id = str(uuid.uuid4())
    dep = registry_pb2.DepositPersonalAccountRequest(
        request_id=dep_id, psn_no=person.psn_no, amount="250.50", memo="monthly contribution")
    first = registry.DepositPersonalAccount(dep, metadata=auth)
    again = registry.DepositPersonalAccount(dep, metadata=auth)  # a retry: replayed, not booked twice
    assert first == again, "a replay returns the first answer"
    print("deposit 250.50 ->", first.balance, "journal", first.journal_id)

    bal = ledger.GetBalance(ledger_pb2.GetBalanceRequest(account=f"pacct:{person.psn_no}"), metadata=auth)
    print("ledger balance", bal.account, bal.balance)
    assert bal.balance == first.balance

    report = ledger.Verify(ledger_pb2.VerifyRequest(), metadata=auth)
    for c in report.checks:
        print(f"  {c.name:<34} {'ok' if c.ok else 'FAIL'}  {c.detail}")
    if not report.ok:
        sys.exit("verify failed")
    print("ok")


if __name__ == "__main__":
    main()
