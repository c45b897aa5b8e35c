#!/usr/bin/env python3
"""The IAM split, asserted on both deployments: template.yaml (SAM) and infra/ (Terraform).

The edge policy may read v1/certs/, v1/challenges/ and v1/manifest.json and create
v1/requests/ objects (If-None-Match only): no access to v1/accounts/, no write outside
v1/requests/, no other action. The list function reads certificates only; apply and renew-all
stay under v1/. Each policy is evaluated the way CloudFormation or Terraform would build it,
for a deployment without and with a namespace prefix and a KMS key.

The checker proves it can fail: it widens the edge policy in several ways and expects each
widening to be refused (a checker that passes everything fails here).

Run by scripts/check-infra in the venv from scripts/infra-requirements.txt (PyYAML, python-hcl2).
"""

from __future__ import annotations

import copy
import fnmatch
import json
import re
import sys
from pathlib import Path

import hcl2
import yaml

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "certbucket-check-bucket"
BUCKET_ARN = f"arn:aws:s3:::{BUCKET}"
KMS_ARN = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000"
SECRET_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:certbucket-abcdef"
PREFIXES = ["", "team/a"]

EDGE_ACTIONS = {"s3:GetObject", "s3:ListBucket", "s3:PutObject", "kms:Decrypt", "kms:GenerateDataKey"}
READ_ONLY = {"s3:GetObject", "s3:ListBucket", "kms:Decrypt"}


class Refused(Exception):
    """A policy grants more than it may."""


# ------------------------------------------------------------------ policy rules


def literal_part(pattern: str) -> str:
    """The part of an IAM pattern before its first wildcard."""
    cut = min([i for i in (pattern.find("*"), pattern.find("?")) if i >= 0], default=len(pattern))
    return pattern[:cut]


def matches(pattern: str, value: str) -> bool:
    """IAM wildcard matching (* and ?) of a resource or condition pattern."""
    return fnmatch.fnmatchcase(value, pattern)


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def statements_of(document: dict) -> list[dict]:
    return [s for s in as_list(document.get("Statement", [])) if s]


def check_edge(document: dict, prefix: str) -> None:
    """Raises Refused unless the edge policy is exactly as narrow as documented."""
    p = f"{prefix}/" if prefix else ""
    objects = f"{BUCKET_ARN}/{p}"
    readable = [f"{p}v1/certs/", f"{p}v1/challenges/"]
    readable_exact = [f"{p}v1/manifest.json"]
    writable = f"{p}v1/requests/"
    secret_keys = [f"{p}v1/accounts/0123/4567.json", f"{p}v1/accounts/", f"{p}v1/renewals/x.json",
                   f"{p}v1/locks/x", f"{p}v1/manifest.json.bak", f"{p}v1/certsx"]
    seen_put = False
    for s in statements_of(document):
        if s.get("Effect", "Allow") != "Allow":
            continue  # a Deny only narrows
        if "NotAction" in s or "NotResource" in s or "NotPrincipal" in s:
            raise Refused(f"edge statement {s.get('Sid')!r} uses NotAction/NotResource")
        actions = as_list(s.get("Action", []))
        resources = as_list(s.get("Resource", []))
        for action in actions:
            if "*" in action or "?" in action:
                raise Refused(f"edge statement {s.get('Sid')!r} grants the wildcard action {action!r}")
            if action not in EDGE_ACTIONS:
                raise Refused(f"edge statement {s.get('Sid')!r} grants {action!r}")
        for action in actions:
            if action.startswith("kms:"):
                for r in resources:
                    if r != KMS_ARN:
                        raise Refused(f"edge {action} on {r!r}, not only on the bucket's KMS key")
            elif action == "s3:ListBucket":
                if resources != [BUCKET_ARN]:
                    raise Refused(f"edge s3:ListBucket on {resources!r}, not only on the bucket")
                values = prefix_condition(s)
                if values is None:
                    raise Refused("edge s3:ListBucket without an s3:prefix condition lists every key")
                for v in values:
                    lit = literal_part(v)
                    if not (any(lit.startswith(r) for r in readable) or v in readable_exact):
                        raise Refused(f"edge may list {v!r}, outside certs/, challenges/, manifest.json")
            elif action == "s3:GetObject":
                for r in resources:
                    key = object_key(r)
                    lit = literal_part(key)
                    if not (any(lit.startswith(x) for x in readable) or key in readable_exact):
                        raise Refused(f"edge may read {r!r}, outside certs/, challenges/, manifest.json")
            elif action == "s3:PutObject":
                seen_put = True
                for r in resources:
                    if not literal_part(object_key(r)).startswith(writable):
                        raise Refused(f"edge may write {r!r}, outside requests/")
                if not requires_if_none_match(s):
                    raise Refused("edge s3:PutObject without the s3:if-none-match condition may overwrite")
        # However it was built, no pattern may reach account credentials or other state.
        for r in resources:
            if r.startswith(objects) or r.startswith(BUCKET_ARN + "/"):
                for key in secret_keys:
                    if matches(r, f"{BUCKET_ARN}/{key}"):
                        raise Refused(f"edge resource {r!r} reaches {key!r}")
    if not seen_put:
        raise Refused("the edge cannot create requests/ objects (no s3:PutObject)")


def object_key(resource: str) -> str:
    if not resource.startswith(BUCKET_ARN + "/"):
        raise Refused(f"object resource {resource!r} is not in the state bucket (or is '*')")
    return resource[len(BUCKET_ARN) + 1 :]


def prefix_condition(statement: dict) -> list[str] | None:
    for operator, keys in (statement.get("Condition") or {}).items():
        if operator in ("StringLike", "StringEquals"):
            for key, values in keys.items():
                if key == "s3:prefix":
                    return as_list(values)
    return None


def requires_if_none_match(statement: dict) -> bool:
    cond = statement.get("Condition") or {}
    return as_list((cond.get("Null") or {}).get("s3:if-none-match")) == ["false"]


def check_list_role(documents: list[dict], prefix: str) -> None:
    p = f"{prefix}/" if prefix else ""
    for document in documents:
        for s in statements_of(document):
            if s.get("Effect", "Allow") != "Allow":
                continue
            for action in as_list(s.get("Action", [])):
                if action.startswith("logs:"):
                    continue
                if action not in READ_ONLY:
                    raise Refused(f"list function may {action!r}")
                if action == "s3:GetObject":
                    for r in as_list(s["Resource"]):
                        if not literal_part(object_key(r)).startswith(f"{p}v1/certs/"):
                            raise Refused(f"list function may read {r!r}")
                if action == "s3:ListBucket":
                    for v in prefix_condition(s) or ["*"]:
                        if not literal_part(v).startswith(f"{p}v1/certs/"):
                            raise Refused(f"list function may list {v!r}")


def check_issuer(document: dict, prefix: str) -> None:
    p = f"{prefix}/" if prefix else ""
    for s in statements_of(document):
        if s.get("Effect", "Allow") != "Allow":
            continue
        for action in as_list(s.get("Action", [])):
            if "*" in action:
                raise Refused(f"issuer grants the wildcard action {action!r}")
            if action.startswith("s3:") and action != "s3:ListBucket":
                for r in as_list(s["Resource"]):
                    if not literal_part(object_key(r)).startswith(f"{p}v1/"):
                        raise Refused(f"issuer may {action} {r!r}, outside the namespace")
            if action == "s3:PutObject":
                for r in as_list(s["Resource"]):
                    if literal_part(object_key(r)).startswith(f"{p}v1/requests/"):
                        raise Refused("issuer writes requests/: only edges create them")
            if action == "secretsmanager:GetSecretValue" and as_list(s["Resource"]) != [SECRET_ARN]:
                raise Refused(f"issuer reads secrets {s['Resource']!r}, not only the configured one")


# ------------------------------------------------------------------ CloudFormation (SAM)


class CfnLoader(yaml.SafeLoader):
    pass


def _tag(name):
    def construct(loader, node):
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        if name == "Ref":
            return {"Ref": value}
        if name == "GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
        return {f"Fn::{name}": value}

    return construct


for _name in ["Ref", "Sub", "GetAtt", "If", "Join", "Select", "Split", "Not", "Equals", "And",
              "Or", "FindInMap", "Base64", "GetAZs", "ImportValue", "Condition", "Cidr"]:
    CfnLoader.add_constructor(f"!{_name}", _tag(_name))

NOVALUE = object()


class Cfn:
    """Evaluates the intrinsic functions of one template for one set of parameters."""

    def __init__(self, template: dict, params: dict):
        self.t = template
        self.params = {}
        for name, spec in template.get("Parameters", {}).items():
            value = params.get(name, spec.get("Default"))
            if value is None:
                raise SystemExit(f"check_iam_split: no value for parameter {name}")
            if spec.get("Type") == "CommaDelimitedList":
                value = str(value).split(",")
            self.params[name] = value
        self.pseudo = {"AWS::Partition": "aws", "AWS::AccountId": "123456789012",
                       "AWS::Region": "us-east-1", "AWS::StackName": "certbucket",
                       "AWS::URLSuffix": "amazonaws.com",
                       "AWS::StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/certbucket/uuid"}
        self.conditions = {k: self.ev(v) for k, v in template.get("Conditions", {}).items()}

    def ref(self, name):
        if name == "AWS::NoValue":
            return NOVALUE
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.params:
            return self.params[name]
        if name in self.t["Resources"]:
            if name == "StateBucket":
                return BUCKET
            return f"<{name}>"
        raise SystemExit(f"check_iam_split: unknown Ref {name}")

    def ev(self, node):
        if isinstance(node, list):
            return [v for v in (self.ev(x) for x in node) if v is not NOVALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (key, arg), = node.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Condition":
                return self.conditions[arg]
            if key == "Fn::If":
                cond, yes, no = arg
                return self.ev(yes if self.conditions[cond] else no)
            if key == "Fn::Not":
                return not self.ev(arg[0])
            if key == "Fn::Equals":
                a, b = (self.ev(x) for x in arg)
                return a == b
            if key == "Fn::And":
                return all(self.ev(x) for x in arg)
            if key == "Fn::Or":
                return any(self.ev(x) for x in arg)
            if key == "Fn::Join":
                sep, items = arg
                return sep.join(str(x) for x in self.ev(items))
            if key == "Fn::Select":
                return self.ev(arg[1])[int(self.ev(arg[0]))]
            if key == "Fn::Split":
                return self.ev(arg[1]).split(arg[0])
            if key == "Fn::GetAtt":
                res, att = arg
                if res == "StateBucket" and att == "Arn":
                    return BUCKET_ARN
                return f"<{res}.{att}>"
            if key == "Fn::FindInMap":
                m, a, b = (self.ev(x) for x in arg)
                return self.t["Mappings"][m][a][b]
            if key == "Fn::Sub":
                text, variables = (arg, {}) if isinstance(arg, str) else arg
                variables = {k: self.ev(v) for k, v in variables.items()}

                def sub(m):
                    name = m.group(1)
                    if name in variables:
                        return str(variables[name])
                    if "." in name:
                        return str(self.ev({"Fn::GetAtt": name.split(".", 1)}))
                    return str(self.ref(name))

                return re.sub(r"\$\{([^}!]+)\}", sub, text)
        out = {}
        for k, v in node.items():
            v = self.ev(v)
            if v is not NOVALUE:
                out[k] = v
        return out


def cfn_policies(prefix: str, kms: bool) -> dict:
    template = yaml.load((ROOT / "template.yaml").read_text(), Loader=CfnLoader)
    cfn = Cfn(template, {"AccountEmail": "ops@example.com", "BucketName": BUCKET,
                         "StorePrefix": prefix, "KmsKeyArn": KMS_ARN if kms else "",
                         "SecretArn": SECRET_ARN})
    resources = template["Resources"]

    def props(name):
        return cfn.ev(resources[name]["Properties"])

    list_role = props("ListRole")
    return {
        "edge": props("EdgePolicy")["PolicyDocument"],
        "issuer": props("IssuerS3Policy")["PolicyDocument"],
        "list": [p["PolicyDocument"] for p in list_role.get("Policies", [])],
        "list_managed": list_role.get("ManagedPolicyArns", []),
    }


# ------------------------------------------------------------------ Terraform


def unwrap(value):
    """python-hcl2 wraps each attribute's value in a one-element list."""
    while isinstance(value, list) and len(value) == 1 and isinstance(value[0], list):
        value = value[0]
    if isinstance(value, list) and len(value) == 1 and not isinstance(value[0], (dict, list)):
        return value[0]
    return value


class Tf:
    """The module's locals and policy documents, with interpolations resolved."""

    def __init__(self, module_dir: Path, prefix: str, kms: bool):
        self.locals: dict = {}
        self.documents: dict = {}
        files = sorted(module_dir.glob("*.tf"))
        if not files:
            raise SystemExit(f"check_iam_split: no .tf files in {module_dir}")
        self.resources: list[tuple[str, str, dict]] = []
        for path in files:
            parsed = hcl2.load(path.open())
            for block in parsed.get("resource", []):
                for kind, named in block.items():
                    for name, body in named.items():
                        self.resources.append((kind, name, body))
            for block in parsed.get("locals", []):
                for k, v in block.items():
                    if not k.startswith("__"):
                        self.locals[k] = unwrap(v)
            for block in parsed.get("data", []):
                for name, body in block.get("aws_iam_policy_document", {}).items():
                    self.documents[name] = body
        self.known = {
            "aws_s3_bucket.state.arn": BUCKET_ARN,
            "local.key_prefix": f"{prefix}/" if prefix else "",
            "var.kms_key_arn": KMS_ARN if kms else None,
            "var.secret_arn": SECRET_ARN,
        }

    def resolve(self, text: str, extra: dict | None = None) -> str:
        known = dict(self.known, **(extra or {}))

        def value_of(expr: str):
            expr = expr.strip()
            if expr in known:
                return known[expr]
            if expr.startswith("local.") and isinstance(self.locals.get(expr[6:]), str):
                return self.resolve(self.locals[expr[6:]], extra)
            raise SystemExit(f"check_iam_split: cannot evaluate ${{{expr}}} in a policy")

        whole = re.fullmatch(r"\$\{([^{}]+)\}", text)
        if whole:
            return value_of(whole.group(1))
        return re.sub(r"\$\{([^{}]+)\}", lambda m: str(value_of(m.group(1))), text)

    def statement(self, body: dict, extra: dict | None = None) -> dict:
        s = {"Effect": unwrap(body.get("effect", "Allow")) or "Allow"}
        if "sid" in body:
            s["Sid"] = unwrap(body["sid"])
        s["Action"] = [self.resolve(a, extra) for a in as_list(unwrap(body.get("actions", [])))]
        s["Resource"] = [self.resolve(r, extra) for r in as_list(unwrap(body.get("resources", [])))]
        for key in ("not_actions", "not_resources", "not_principals"):
            if key in body:
                s["Not" + key[4:].title().rstrip("s")] = unwrap(body[key])
        for cond in body.get("condition", []):
            test, variable = unwrap(cond["test"]), unwrap(cond["variable"])
            values = [self.resolve(v, extra) for v in as_list(unwrap(cond["values"]))]
            s.setdefault("Condition", {}).setdefault(test, {})[variable] = values
        return s

    def document(self, name: str) -> dict:
        body = self.documents[name]
        statements = [self.statement(b) for b in body.get("statement", [])]
        for dyn in body.get("dynamic", []):
            for label, spec in dyn.items():
                if label != "statement":
                    continue
                for_each = unwrap(spec["for_each"])
                # `for_each = var.x == null ? [] : [var.x]`: present exactly when var.x is set.
                m = re.fullmatch(r"\$\{(var\.\w+) == (?:null|None) \? \[\] : \['\$\{\1\}'\]\}", for_each)
                if not m:
                    raise SystemExit(f"check_iam_split: cannot evaluate for_each {for_each!r} in {name}")
                value = self.known.get(m.group(1))
                if value is None:
                    continue
                for content in spec["content"]:
                    statements.append(self.statement(content, {"statement.value": value}))
        return {"Statement": statements}


def tf_edge_wiring(tf: Tf) -> None:
    """The edge role gets the checked document and nothing else."""
    policies = {name: body for kind, name, body in tf.resources if kind == "aws_iam_policy"}
    if unwrap(policies.get("edge", {}).get("policy")) != "${data.aws_iam_policy_document.edge.json}":
        raise Refused("aws_iam_policy.edge is not data.aws_iam_policy_document.edge")
    for kind, name, body in tf.resources:
        role = str(unwrap(body.get("role", "")))
        roles = str(unwrap(body.get("roles", "")))
        if "aws_iam_role.edge" not in role + roles:
            continue
        if kind == "aws_iam_instance_profile":
            continue
        if kind != "aws_iam_role_policy_attachment" or unwrap(body.get("policy_arn")) != "${aws_iam_policy.edge.arn}":
            raise Refused(f"{kind}.{name} gives the edge role more than the edge policy")
    for kind, name, body in tf.resources:
        if kind == "aws_iam_role" and name == "edge":
            for key in ("inline_policy", "managed_policy_arns"):
                if key in body:
                    raise Refused(f"aws_iam_role.edge has {key}")


def tf_policies(prefix: str, kms: bool) -> dict:
    tf = Tf(ROOT / "infra" / "modules" / "certbucket", prefix, kms)
    for name in ("edge", "issuer", "list"):
        if name not in tf.documents:
            raise SystemExit(f"check_iam_split: infra has no data.aws_iam_policy_document.{name}")
    tf_edge_wiring(tf)
    return {"edge": tf.document("edge"), "issuer": tf.document("issuer"), "list": [tf.document("list")],
            "list_managed": []}


# ------------------------------------------------------------------ widenings that must fail


def widenings(edge: dict, prefix: str) -> list[tuple[str, dict]]:
    p = f"{prefix}/" if prefix else ""
    out = []

    def add(label, statement):
        doc = copy.deepcopy(edge)
        doc["Statement"] = as_list(doc["Statement"]) + [statement]
        out.append((label, doc))

    add("read the whole bucket", {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"{BUCKET_ARN}/*"})
    add("read accounts/", {"Effect": "Allow", "Action": ["s3:GetObject"],
                           "Resource": [f"{BUCKET_ARN}/{p}v1/accounts/*"]})
    add("read v1/*", {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": [f"{BUCKET_ARN}/{p}v1/*"]})
    add("write certs/", {"Effect": "Allow", "Action": ["s3:PutObject"], "Resource": [f"{BUCKET_ARN}/{p}v1/certs/*"],
                         "Condition": {"Null": {"s3:if-none-match": "false"}}})
    add("delete requests/", {"Effect": "Allow", "Action": ["s3:DeleteObject"],
                             "Resource": [f"{BUCKET_ARN}/{p}v1/requests/*"]})
    add("s3:*", {"Effect": "Allow", "Action": ["s3:*"], "Resource": [f"{BUCKET_ARN}/{p}v1/certs/*"]})
    add("s3:Get*", {"Effect": "Allow", "Action": ["s3:Get*"], "Resource": [f"{BUCKET_ARN}/{p}v1/certs/*"]})
    add("list everything", {"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": [BUCKET_ARN]})
    add("list accounts/", {"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": [BUCKET_ARN],
                           "Condition": {"StringLike": {"s3:prefix": [f"{p}v1/*"]}}})
    add("resource *", {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": ["*"]})
    add("NotResource", {"Effect": "Allow", "Action": ["s3:GetObject"], "NotResource": [f"{BUCKET_ARN}/x"]})
    unconditional = copy.deepcopy(edge)
    for s in as_list(unconditional["Statement"]):
        if "s3:PutObject" in as_list(s.get("Action", [])):
            s.pop("Condition", None)
    out.append(("overwrite requests/ (no If-None-Match condition)", unconditional))
    return out


# ------------------------------------------------------------------ main


def main() -> int:
    checked = 0
    failures = []
    for source, build in (("template.yaml", cfn_policies), ("infra/modules/certbucket", tf_policies)):
        for prefix in PREFIXES:
            for kms in (False, True):
                where = f"{source} (prefix {prefix!r}, {'KMS' if kms else 'SSE-S3'})"
                try:
                    policies = build(prefix, kms)
                except Refused as e:
                    failures.append(f"{where}: {e}")
                    continue
                for label, check in (("edge policy", lambda: check_edge(policies["edge"], prefix)),
                                     ("list role", lambda: check_list_role(policies["list"], prefix)),
                                     ("issuer policy", lambda: check_issuer(policies["issuer"], prefix))):
                    checked += 1
                    try:
                        check()
                    except Refused as e:
                        failures.append(f"{where}: {label}: {e}")
                if policies["list_managed"]:
                    failures.append(f"{where}: list role has managed policies {policies['list_managed']!r}")
                kinds = {a for s in statements_of(policies["edge"]) for a in as_list(s.get("Action", []))}
                if kms and not {"kms:Decrypt", "kms:GenerateDataKey"} <= kinds:
                    failures.append(f"{where}: edge policy cannot use the bucket's KMS key")
                for label, widened in widenings(policies["edge"], prefix):
                    checked += 1
                    try:
                        check_edge(widened, prefix)
                    except Refused:
                        continue
                    failures.append(f"{where}: the checker accepted a widened edge policy: {label}")
    # Not IAM, but only this evaluator can see it: the template's inline config documents parse,
    # and list's carries no secret field.
    template = yaml.load((ROOT / "template.yaml").read_text(), Loader=CfnLoader)
    for params in ({}, {"Domains": "a.example.com,*.example.org", "EabKid": "kid",
                        "EabHmacKey": "{vault://aws/eab/hmac}", "PreferredChain": "ISRG Root X1"}):
        cfn = Cfn(template, dict({"AccountEmail": "ops@example.com", "BucketName": BUCKET}, **params))
        for function in ("ApplyFunction", "ListFunction", "RenewAllFunction"):
            checked += 1
            env = cfn.ev(template["Resources"][function]["Properties"]["Environment"]["Variables"])
            try:
                config = json.loads(env["CERTBUCKET_CONFIG"])
            except ValueError as e:
                failures.append(f"template.yaml: {function}'s CERTBUCKET_CONFIG is not JSON: {e}")
                continue
            if function == "ListFunction" and {"eab_hmac_key", "account_key"} & set(config):
                failures.append("template.yaml: list's config carries secret fields")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    print(f"iam-split: {checked - len(failures)} passed, {len(failures)} failed")
    if not failures:
        print(json.dumps(cfn_policies("", False)["edge"], indent=1), file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
