"""False positives of the reading of uploads outside an allowlist (proxy/detectors/uploads.py).

    python3 bench/upload_eval.py [--data DIR] [--allow HOST ...]

The benign calls of bench/command_eval.py (tests/fixtures/commands/benign.txt, and from the dev data the
documentation's command lines run by a shell tool, its Python source run by a code tool, its documents
written by a heredoc), each read as the proxy reads a call, under a role whose egress allowlist holds
only ``--allow`` (by default a model API's host and the local host's ports, as strict as a role gets). A
false positive is a call withheld; each is printed with the host it was found to send to.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.command_eval import Case, _dev_data, dev_cases, fixture_cases
from proxy.detectors.uploads import outside_allowlist
from proxy.egress import EgressRules, decide
from proxy.exchange import ToolCall
from proxy.scanning.rulepack import ScanBudget

DEFAULT_ALLOW = ("api.openai.com", "localhost:*")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data")
    parser.add_argument("--allow", nargs="*", default=list(DEFAULT_ALLOW))
    args = parser.parse_args()
    rules = EgressRules(allow=args.allow)

    def allowed(host: str, port: int) -> bool:
        return decide("eval", "eval", rules, host, port, []).allowed

    groups: dict[str, list[Case]] = {"benign.txt": fixture_cases("benign.txt")}
    data = _dev_data(args.data)
    if data is not None:
        for group, case in dev_cases(data):
            groups.setdefault(group, []).append(case)
    print(f"False positives: withheld under an allowlist of {', '.join(args.allow)}")
    for group, cases in groups.items():
        found = []
        for tool, arguments in cases:
            call = ToolCall(id="eval", name=tool, arguments=arguments, where="eval")
            found += [
                (finding.signal, arguments) for finding in outside_allowlist([call], allowed, ScanBudget(1.0))
            ]
        print(f"  {group}: {len(found)}/{len(cases)}")
        for signal, arguments in found:
            print(f"    {signal}: {arguments[:160]}")


if __name__ == "__main__":
    main()
