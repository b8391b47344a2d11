"""python -m bench.app: the options, then part 1's and part 2's figures and tables (see
bench/app/__init__.py)."""

import argparse
import json
import statistics

import bench.app
from bench.app.live_latency import CONTENDERS, latency_once
from bench.app.page_render import page_render


def main() -> None:
    # prog: the usage line as when this was bench/app.py
    parser = argparse.ArgumentParser(prog="app.py", description=bench.app.__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=5000, help="events of the page's session")
    parser.add_argument("--loads", type=int, default=5, help="page loads measured")
    parser.add_argument("--rate", type=int, default=2000, help="events per second offered")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2, help="rounds of A and B")
    parser.add_argument(
        "--contenders", default="A,B,C", help="A first, then B and/or C (see above)"
    )
    parser.add_argument("--skip-render", action="store_true", help="only part 2")
    parser.add_argument("--skip-latency", action="store_true", help="only part 1")
    args = parser.parse_args()
    if not args.skip_render:
        render = page_render(args)
        print(json.dumps(render), flush=True)
        print(
            f"\npage of {render['records_in_page']:,} records ({render['events']:,} events): "
            f"{render['html_bytes'] / 1e6:.2f} MB of HTML, {render['table_rows']:,} table "
            f"rows; {args.loads} loads\n\n| figure | median ms | max ms |\n|---|---:|---:|"
        )
        for key, name in (
            ("goto_load_ms", "page.goto until load (wall)"),
            ("load_ms", "load event (in page)"),
            ("interactive_ms", "timeline interactive (in page)"),
            ("hover_ms", "hover to tooltip shown (in page)"),
        ):
            print(f"| {name} | {render[key]['median']} | {render[key]['max']} |")
        print(flush=True)
    if args.skip_latency:
        return
    contenders = [c.strip() for c in args.contenders.split(",")]
    if contenders[0] != "A" or any(c not in CONTENDERS for c in contenders):
        raise SystemExit(f"--contenders: A first, then any of {', '.join(CONTENDERS)}")
    rows = []
    for n in range(args.rounds):
        order = contenders[n % len(contenders) :] + contenders[: n % len(contenders)]
        got = {}
        for contender in order:  # each round in another order: drift hits each one
            got[contender] = latency_once(args, contender)
            print(json.dumps({"round": n + 1, **got[contender]}), flush=True)
        rows.append(got)
    keys = ("p50_ms", "p99_ms", "p99_9_ms", "max_ms")
    print(f"\n{args.rate} events/s for {args.seconds:g} s over {args.users} users")
    for c in contenders:
        print(f"- {c}: {CONTENDERS[c]}")
    print(
        "\n| round | contender | p50 ms | p99 ms | p99.9 ms | max ms | CPU s: tagger run, "
        "serve, browser or client | CPU s not ours |\n|---|---|---:|---:|---:|---:|---|---:|"
    )
    for n, got in enumerate(rows, start=1):
        for c in contenders:
            figures = " | ".join(str(got[c][k]) for k in keys)
            cpu = got[c]["cpu_s"]
            mine = f"{cpu['tagger_run']}, {cpu['tagger_serve']}, "
            mine += f"{cpu['chromium'] + cpu['live_client']}"
            print(f"| {n} | {c} | {figures} | {mine} | {cpu['not_ours']} |")
            if c != "A":
                ratios = " | ".join(f"{got[c][k] / got['A'][k]:.2f}" for k in keys)
                print(f"| {n} | {c}/A | {ratios} | | |")
    medians = {
        f"median_{c}_over_A": {
            k: round(statistics.median(g[c][k] / g["A"][k] for g in rows), 2) for k in keys
        }
        for c in contenders[1:]
    }
    print(json.dumps(medians))


if __name__ == "__main__":
    main()
