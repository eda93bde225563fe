"""schemathesis hooks for Corral's API (loaded through SCHEMATHESIS_HOOKS).

Invented ids name nothing, so most cases would only ever meet a 404: every other case of an
operation on one device or one rule names one that schemathesis_roles.py seeded instead (a device
of the default tenant, one of tenant `acme`, the first rule), so the operations run for real too.

Long polls (`wait` on a command, `wait` when a device polls for its next one) hold a request open
for up to a minute by design; the fuzzer asks for no wait, so a run tests every operation instead
of waiting. Whether a wait is honoured is tested elsewhere (tests/commands.rs).
"""

import itertools

import schemathesis


def _short(value):
    return 0 if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else value


SEEDED_DEVICES = ["pump-1", "pump-2"]
_cases = itertools.count()


def _seeded(case):
    path = case.operation.path
    parameters = case.path_parameters
    if not isinstance(parameters, dict) or "id" not in parameters:
        return
    n = next(_cases)
    if n % 2:
        return
    if path.startswith("/api/v1/devices/{id}"):
        parameters["id"] = SEEDED_DEVICES[(n // 2) % len(SEEDED_DEVICES)]
    elif path.startswith("/api/v1/rules/{id}"):
        parameters["id"] = 1


@schemathesis.hook
def map_case(context, case):
    _seeded(case)
    if isinstance(case.body, dict) and "wait" in case.body:
        case.body["wait"] = _short(case.body["wait"])
    if isinstance(case.query, dict) and "wait" in case.query:
        wait = case.query["wait"]
        if isinstance(wait, str) and wait.isdigit():
            wait = int(wait)
        case.query["wait"] = _short(wait)
    return case
