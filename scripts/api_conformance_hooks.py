"""Schemathesis hooks for scripts/api-conformance.

role_table_respected: an operation whose security asks for a role the caller of
this run does not hold must never answer 2xx. The role comes from the document's
security (the scope names it), which the hub's tests tie to the route table
(api::table()), so this checks the table's promise on a live hub.
"""

import os
import zlib

import schemathesis

CALLER = os.environ.get("MUSTER_CONFORMANCE_ROLE", "none")
# What each kind of caller may call: a member key the member routes, an admin key
# the member and admin ones; an agent the agent ones; no key only the public ones.
ALLOWED = {"none": set(), "member": {"member"}, "admin": {"member", "admin"}, "agent": {"agent"}}
KEEP = {k for k in os.environ.get("MUSTER_CONFORMANCE_KEEP", "").split(",") if k}


def required_role(operation):
    """The role an operation needs (`None` when public), from its security scopes."""
    for requirement in operation.definition.raw.get("security") or []:
        for scheme, scopes in requirement.items():
            if scheme == "agent_key":
                return "agent"
            if scopes:
                return scopes[0]
    return None


@schemathesis.check
def role_table_respected(ctx, response, case):
    role = required_role(case.operation)
    if role is None or role in ALLOWED[CALLER]:
        return None
    if 200 <= response.status_code < 300:
        raise AssertionError(
            f"{case.operation.label} needs the {role} role but answered "
            f"{response.status_code} to a caller with {CALLER} key"
        )
    return None


# An id no record has: what a kept key's id is replaced with.
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    """Never revoke or rotate the keys the runs authenticate with.

    Schemathesis reuses ids it saw in responses (GET /api/v1/keys lists them) as
    path parameters in every phase; a filter would starve those operations of
    examples, so a kept id is swapped for an unknown one (the call then gets 404).
    """
    for name, value in (case.path_parameters or {}).items():
        if str(value) in KEEP:
            case.path_parameters[name] = UNKNOWN_ID


AGENT = os.environ.get("MUSTER_CONFORMANCE_AGENT", "")


@schemathesis.hook
def map_path_parameters(ctx, path_parameters):
    """Half of the calls naming an agent name the enrolled one, so they get past 404."""
    operation = getattr(ctx, "operation", None)
    if not (AGENT and path_parameters and operation is not None):
        return path_parameters
    if operation.path.startswith("/api/v1/agents/{id}") and "id" in path_parameters:
        if zlib.crc32(repr(path_parameters).encode()) % 2 == 0:
            path_parameters["id"] = AGENT
    return path_parameters
