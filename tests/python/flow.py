"""A volunteer and an operator written against the Python client that
openapi-python-client generated from openapi/openapi.json, driven by
tests/tests/python_client.rs against a live askee-server.

Every HTTP call goes through the generated endpoint functions and models.
What the spec cannot carry as code, this script does by hand from what the
spec documents: the Ed25519 signatures (request headers, grant statement,
task statement) and the canonical JSON of a task statement, whose field
order is the order of the schema's `properties`.

Usage: python flow.py CONFIG_JSON (PYTHONPATH must hold the generated
package). Prints one JSON summary line on standard output; any failure
raises, so the exit status is non-zero.
"""

import base64
import hashlib
import json
import sys
import time
import uuid

import attrs
import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from askee_control_plane_client import AuthenticatedClient, Client
from askee_control_plane_client.api.consent import grant, join
from askee_control_plane_client.api.tasks import get_task, submit
from askee_control_plane_client.api.tokens import verify
from askee_control_plane_client.types import UNSET
from askee_control_plane_client.models import (
    GrantResponse,
    JoinRequest,
    ManifestResponse,
    SignedGrant,
    TaskCreated,
    TaskInputs,
    TaskInputsFiles,
    TaskLimits,
    TaskRequirements,
    TaskState,
    TaskStatement,
    TaskStatus,
    TaskSubmission,
    VerifyRequest,
    VerifyResponse,
)

REQUEST_CONTEXT = b"askee-request-v1\0"
GRANT_CONTEXT = b"askee-grant-v1\0"
TASK_CONTEXT = b"askee-task-v1\0"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def public_key(key: Ed25519PrivateKey) -> str:
    return b64url(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


def expect(value, kind, what):
    """The parsed answer must be the documented success model."""
    if not isinstance(value, kind):
        raise AssertionError(f"{what}: expected {kind.__name__}, got {value!r}")
    no_extra_fields(value, what)
    return value


def no_extra_fields(model, what):
    """A field the schema does not declare means the spec is not the truth."""
    extra = getattr(model, "additional_properties", None)
    if extra and not isinstance(model, TaskInputsFiles):
        raise AssertionError(f"{what}: fields absent from the spec: {sorted(extra)}")
    if attrs.has(type(model)):
        for field in attrs.fields(type(model)):
            value = getattr(model, field.name)
            for item in value if isinstance(value, list) else [value]:
                if attrs.has(type(item)):
                    no_extra_fields(item, f"{what}.{field.name}")


class SpecCanonical:
    """Canonical JSON as the spec defines it: compact, object members in the
    order of the schema's `properties`, map entries by key."""

    def __init__(self, spec: dict):
        self.schemas = spec["components"]["schemas"]

    def resolve(self, schema: dict) -> dict:
        while "$ref" in schema:
            schema = self.schemas[schema["$ref"].rsplit("/", 1)[1]]
        return schema

    def encode(self, value, schema: dict) -> str:
        schema = self.resolve(schema)
        if isinstance(value, dict):
            props = schema.get("properties")
            if props is not None:
                unknown = set(value) - set(props)
                if unknown:
                    raise AssertionError(f"not in the schema: {sorted(unknown)}")
                missing = [k for k in props if k not in value]
                if missing:
                    raise AssertionError(f"canonical form needs every field: {missing}")
                parts = [
                    json.dumps(k) + ":" + self.encode(value[k], props[k]) for k in props
                ]
            else:
                item = schema.get("additionalProperties", {})
                parts = [
                    json.dumps(k, ensure_ascii=False) + ":" + self.encode(value[k], item)
                    for k in sorted(value, key=lambda k: k.encode())
                ]
            return "{" + ",".join(parts) + "}"
        if isinstance(value, list):
            item = schema.get("items", {})
            return "[" + ",".join(self.encode(v, item) for v in value) + "]"
        if isinstance(value, bool) or value is None:
            return json.dumps(value)
        if isinstance(value, int):
            return str(value)
        if isinstance(value, str):
            return json.dumps(value, ensure_ascii=False)
        raise AssertionError(f"no canonical form for {value!r}")


def node_signer(key: Ed25519PrivateKey):
    """An httpx request hook adding the node-signature headers over the
    exact bytes the generated client is about to send."""

    def sign(request: httpx.Request):
        body = request.read()
        timestamp = int(time.time())
        nonce = uuid.uuid4().hex
        text = "\n".join(
            [
                request.method.upper(),
                request.url.raw_path.decode(),
                str(timestamp),
                nonce,
                hashlib.sha256(body).hexdigest(),
            ]
        )
        request.headers["askee-node-key"] = public_key(key)
        request.headers["askee-timestamp"] = str(timestamp)
        request.headers["askee-nonce"] = nonce
        request.headers["askee-signature"] = b64url(
            key.sign(REQUEST_CONTEXT + text.encode())
        )

    return sign


def volunteer(url: str) -> dict:
    """Join, grant exactly what is proposed, verify the token."""
    node = Ed25519PrivateKey.generate()
    signed = Client(base_url=url, httpx_args={"event_hooks": {"request": [node_signer(node)]}})
    plain = Client(base_url=url)
    with signed, plain:
        manifest = expect(
            join.sync(client=signed, body=JoinRequest(node_public_key=public_key(node))),
            ManifestResponse,
            "join",
        )
        now = int(time.time())
        statement = {
            "version": "askee-grant/1",
            "manifest_id": manifest.manifest.manifest_id,
            "manifest_digest": manifest.manifest_digest,
            "node_public_key": public_key(node),
            "permissions": manifest.manifest.proposed.to_dict(),
            "grant_expires_at": min(now + 86_400, manifest.manifest.grant_expires_at_max),
            "signed_at": now,
            "nonce": uuid.uuid4().hex,
        }
        # The grant is signed over these exact bytes, which travel as they are.
        raw = json.dumps(statement, separators=(",", ":")).encode()
        granted = expect(
            grant.sync(
                client=plain,
                body=SignedGrant(
                    statement=b64url(raw),
                    signature=b64url(node.sign(GRANT_CONTEXT + raw)),
                ),
            ),
            GrantResponse,
            "grant",
        )
        checked = expect(
            verify.sync(client=plain, body=VerifyRequest(token=granted.consent_token.token)),
            VerifyResponse,
            "verify",
        )
        if not checked.valid:
            raise AssertionError(f"fresh token is not valid: {checked!r}")
        if checked.payload.grant_id != granted.grant_id:
            raise AssertionError("verified token names another grant")
        if checked.payload.subject != public_key(node):
            raise AssertionError("verified token names another subject")
        return {
            "grant_id": granted.grant_id,
            "token_id": checked.payload.token_id,
            "subject": checked.payload.subject,
        }


def operator(url: str, config: dict, canonical: SpecCanonical) -> list:
    """Submit signed tasks, wait for each verdict, read result and evidence."""
    key = Ed25519PrivateKey.from_private_bytes(b64url_decode(config["operator_seed"]))
    client = AuthenticatedClient(base_url=url, token=config["credential"])
    out = []
    with client:
        ids = []
        for n, task in enumerate(config["tasks"]):
            statement = TaskStatement(
                version="askee-task/1",
                module_sha256=config["module_sha256"],
                task_type="data-processing",
                inputs=TaskInputs(args=[], stdin=task["stdin"], files=TaskInputsFiles()),
                requirements=TaskRequirements(cpu_cores=1, ram_mb=32, storage_gb=0, bandwidth_mbps=0),
                limits=TaskLimits(fuel=100_000_000, memory_mb=32, wall_seconds=60, cpu_percent=50),
                random_seed=0,
                deadline=int(time.time()) + 3600,
                f=0,
                max_replicas=3,
                adaptive=False,
                nonce=f"python-{n}-{uuid.uuid4().hex}",
            )
            signed_bytes = canonical.encode(
                statement.to_dict(), {"$ref": "#/components/schemas/TaskStatement"}
            ).encode()
            body = TaskSubmission(
                statement=statement,
                operator_public_key=public_key(key),
                signature=b64url(key.sign(TASK_CONTEXT + signed_bytes)),
                known_digest=task.get("known_digest") or UNSET,
                bootstrap=task.get("known_digest") is not None,
            )
            created = expect(submit.sync(client=client, body=body), TaskCreated, "submit")
            if not created.created:
                raise AssertionError(f"task {created.task_id} already existed")
            ids.append(created.task_id)
        deadline = time.monotonic() + config["timeout_seconds"]
        for task_id in ids:
            while True:
                status = expect(get_task.sync(task_id, client=client), TaskStatus, "get task")
                if status.state != TaskState.PENDING:
                    break
                if time.monotonic() > deadline:
                    raise AssertionError(f"task {task_id} still pending")
                time.sleep(0.05)
            out.append(
                {
                    "task_id": status.task_id,
                    "state": status.state.value,
                    "accepted_digest": status.accepted_digest,
                    "evidence": [
                        {"node_id": e.node_id, "status": e.status.value, "result_digest": e.result_digest}
                        for e in status.evidence
                    ],
                }
            )
    return out


def main():
    config = json.loads(sys.argv[1])
    with open(config["spec"]) as f:
        canonical = SpecCanonical(json.load(f))
    summary = {
        "volunteer": volunteer(config["url"]),
        "tasks": operator(config["url"], config, canonical),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
