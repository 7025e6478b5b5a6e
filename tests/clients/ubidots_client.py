"""Drives Tessera with the public Python client `ubidots` 1.6.6, unchanged, pointed at Tessera by base_url.

Run by the Rust test `python_clients::the_ubidots_python_client_works_unchanged`, which starts Tessera and passes
TESSERA_BASE_URL and TESSERA_API_KEY. Exits non-zero with a message on the first mismatch.
"""

import os
import sys

from ubidots import ApiClient


def check(condition, message):
    if not condition:
        print("FAILED: " + message, file=sys.stderr)
        sys.exit(1)


def main():
    base_url = os.environ["TESSERA_BASE_URL"].rstrip("/") + "/api/v1.6/"
    api = ApiClient(apikey=os.environ["TESSERA_API_KEY"], base_url=base_url)

    datasource = api.create_datasource({"name": "python-client"})
    check(isinstance(datasource.id, str), "datasource ids are strings")
    check(datasource.name == "python-client", "datasource name: %r" % datasource.name)

    variable = datasource.create_variable({"name": "temperature", "unit": "C"})
    check(variable.unit == "C", "variable unit: %r" % variable.unit)
    check(variable.datasource["url"].endswith("/datasources/" + datasource.id), "variable links its datasource")

    saved = variable.save_value({"value": 21.5, "timestamp": 1000})
    check(saved["value"] == 21.5, "save_value answers the stored dot: %r" % saved)
    variable.save_values([{"value": n, "timestamp": 2000 + n} for n in range(250)])

    values = variable.get_values()
    check(len(values) == 251, "get_values pages through every value: %d" % len(values))
    check(values[0]["timestamp"] == 2249, "newest first: %r" % values[0])
    some = variable.get_values(5)
    check(len(some) == 5, "get_values(5): %d" % len(some))

    second = datasource.create_variable({"name": "humidity", "unit": "%"})
    api.save_collection([{"variable": variable.id, "value": 1, "timestamp": 5000},
                         {"variable": second.id, "value": 2, "timestamp": 5000}])
    check(len(second.get_values()) == 1, "save_collection stored the humidity dot")

    check(len(datasource.get_variables()) == 2, "the datasource has two variables")
    check(any(v.id == variable.id for v in api.get_variables()), "get_variables lists the variable")
    check(api.get_variable(variable.id).name == "temperature", "get_variable by id")
    check(any(d.id == datasource.id for d in api.get_datasources()), "get_datasources lists the datasource")
    check(api.get_datasource(datasource.id).name == "python-client", "get_datasource by id")
    check(api.get_datasource(url=datasource.url).id == datasource.id, "get_datasource by url")

    variable.remove_values(2000, 2099)
    check(len(variable.get_values()) == 152, "remove_values deleted the range (252 before)")
    check(second.remove_variable(), "remove_variable answers 204")
    datasource.remove_datasource()
    check(all(d.id != datasource.id for d in api.get_datasources()), "remove_datasource deleted it")
    print("ubidots client: all checks passed")


if __name__ == "__main__":
    main()
