"""Drives the Apache Airflow OpenFaaS provider's OpenFaasHook against a running faasgate.

Run by tests/it/airflow_hook.rs with the venv's python (target/pyenv/airflow, made by
scripts/test-setup.sh). The hook finds its gateway as in any Airflow deployment: in an
Airflow connection, here given in environment variables, so no Airflow database is needed:

- AIRFLOW_CONN_OPEN_FAAS_DEFAULT (the hook's default conn id, open_faas_default): the
  gateway URL with the basic-auth credentials in it as the connection's host. The hook only
  reads `host` (its login and password fields are hidden and unused), and `requests` sends
  the credentials of a URL as basic auth.
- AIRFLOW_CONN_OPENFAAS_NOAUTH: the same gateway without credentials.

Arguments: DEPLOYED MISSING NEW PROCESS: a function the test deployed, a name that is not
deployed, a name for the hook to deploy, and the process the new function runs.

Each step prints `ok <step>`; the first failure raises, so the exit code is non-zero and the
traceback names the step. What reached the function is checked by the Rust test (its log).
"""

import json
import sys
import time

import requests
from airflow.providers.common.compat.sdk import AirflowException
from airflow.providers.openfaas.hooks.openfaas import OpenFaasHook

NOAUTH = "openfaas_noauth"


def ok(step):
    print("ok", step, flush=True)


def raises(step, call):
    try:
        call()
    except AirflowException:
        ok(step)
        return
    raise AssertionError(f"{step}: the hook did not raise")


def status(hook, name):
    """The function's status as the gateway reports it (plain requests, not the hook)."""
    r = requests.get(hook.get_conn().host + "/system/function/" + name, timeout=30)
    r.raise_for_status()
    return r.json()


def wait_status(hook, name, what, cond):
    deadline = time.monotonic() + 30
    while True:
        s = status(hook, name)
        if cond(s):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{name}: not {what} within 30 s: {s}")
        time.sleep(0.05)


def main():
    deployed, missing, new, process = sys.argv[1:5]
    hook = OpenFaasHook(function_name=deployed)
    anonymous = OpenFaasHook(function_name=deployed, conn_id=NOAUTH)

    # GET /system/function/{name}: 2xx means it exists.
    assert hook.does_function_exist() is True
    ok("exists")
    assert OpenFaasHook(function_name=missing).does_function_exist() is False
    ok("missing")
    # Without credentials the system API answers 401, which the hook reads as "absent".
    assert anonymous.does_function_exist() is False
    ok("exists-without-credentials")

    # POST /function/{name} and /async-function/{name}: a dict body goes form-encoded.
    hook.invoke_function({"step": "sync"})
    ok("invoke")
    hook.invoke_async_function({"step": "async", "msg": "hello airflow"})
    ok("invoke-async")
    # Function routes are not behind basic auth, in OpenFaaS as here.
    anonymous.invoke_async_function({"step": "async-anonymous"})
    ok("invoke-async-without-credentials")

    # POST /system/functions, form-encoded (maps as JSON text), must answer exactly 202.
    spec = {"service": new, "image": "local/recorder", "envProcess": process}
    OpenFaasHook(function_name=new).deploy_function(False, spec)
    wait_status(hook, new, "deployed", lambda s: s["envProcess"] == process)
    ok("deploy")
    # PUT /system/functions, form-encoded, exactly 202.
    form = dict(spec, envVars=json.dumps({"STAGE": "form"}))
    OpenFaasHook(function_name=new).update_function(form)
    wait_status(hook, new, "updated by form", lambda s: s["envVars"] == {"STAGE": "form"})
    ok("update-form")
    # deploy_function(overwrite=True) is update_function; a body passed as a JSON string goes
    # as it is, with no Content-Type.
    js = json.dumps(dict(spec, envVars={"STAGE": "json"}, labels={"team": "data"}))
    OpenFaasHook(function_name=new).deploy_function(True, js)
    wait_status(
        hook,
        new,
        "updated by JSON",
        lambda s: s["envVars"] == {"STAGE": "json"} and s["labels"].get("team") == "data",
    )
    ok("update-json")

    # Refusals surface as the hook's AirflowException: PUT of a missing function is a 404,
    # a deploy without credentials a 401.
    raises(
        "update-missing",
        lambda: OpenFaasHook(function_name=missing).update_function(
            dict(spec, service=missing)
        ),
    )
    raises(
        "deploy-without-credentials",
        lambda: OpenFaasHook(function_name=new, conn_id=NOAUTH).deploy_function(False, spec),
    )
    ok("done")


if __name__ == "__main__":
    main()
