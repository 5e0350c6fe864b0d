"""Which metric and label names a PromQL expression uses, and which ones an exposition serves.

The operator kit (Grafana dashboard, alert rules) queries the exporter by name; these helpers
let a test compare the two so neither can rot silently. The PromQL side is a small tokenizer,
not a full parser: it finds every vector selector (metric name plus the label names of its
matchers) and every label named in a grouping clause (by, without, on, ignoring, group_left,
group_right). Anything it does not understand raises PromQLNameError instead of being skipped,
so an unchecked expression cannot pass by accident.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, FrozenSet, Iterable, List, Optional, Set, Tuple

# Prometheus' functions (docs/querying/functions.md, up to 3.x). An unknown name followed by
# "(" is an error: it is either a typo or a function this list has to learn.
FUNCTIONS = frozenset("""
abs absent absent_over_time acos acosh asin asinh atan atanh avg_over_time ceil changes clamp
clamp_max clamp_min cos cosh count_over_time days_in_month day_of_month day_of_week day_of_year
deg delta deriv double_exponential_smoothing exp floor histogram_avg histogram_count
histogram_fraction histogram_quantile histogram_stddev histogram_stdvar histogram_sum
holt_winters hour idelta increase info irate label_join label_replace last_over_time ln log10
log2 mad_over_time max_over_time min_over_time minute month pi predict_linear
present_over_time quantile_over_time rad rate resets round scalar sgn sin sinh sort sort_desc
sort_by_label sort_by_label_desc sqrt stddev_over_time stdvar_over_time sum_over_time tan tanh
time timestamp ts_of_max_over_time ts_of_min_over_time ts_of_last_over_time vector year
""".split())
AGGREGATIONS = frozenset("""
sum min max avg group stddev stdvar count count_values bottomk topk quantile limitk limit_ratio
""".split())
GROUPING = frozenset(["by", "without", "on", "ignoring", "group_left", "group_right"])
BINARY_KEYWORDS = frozenset(["and", "or", "unless", "atan2", "bool"])
NUMBER_WORDS = frozenset(["inf", "nan"])
# Functions whose string arguments name labels: a label used there would escape the check.
UNSUPPORTED = frozenset(["label_replace", "label_join", "sort_by_label", "sort_by_label_desc"])

# Grafana's built-in interval variables become a duration; every other $variable becomes a
# regex that matches anything (that is what "All" means for our dashboard's variables).
GRAFANA_INTERVALS = ("$__rate_interval", "$__interval", "$__range", "${__rate_interval}",
                     "${__interval}", "${__range}")


class PromQLNameError(ValueError):
    """An expression the name checker cannot vouch for."""


@dataclass(frozen=True)
class Selector:
    """One vector selector: ``metric{label op "value", ...}``."""

    metric: str
    labels: FrozenSet[str]


@dataclass(frozen=True)
class ExpressionNames:
    """The names one expression depends on."""

    selectors: Tuple[Selector, ...]
    grouping: FrozenSet[str]

    @property
    def metrics(self) -> FrozenSet[str]:
        return frozenset(s.metric for s in self.selectors)


def substitute_grafana_variables(expr: str, interval: str = "5m") -> str:
    """The expression as Prometheus would receive it from our dashboard with "All" selected."""
    for name in GRAFANA_INTERVALS:
        expr = expr.replace(name, interval)
    expr = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::[a-z]+)?\}", ".*", expr)
    expr = re.sub(r"\[\[[A-Za-z_][A-Za-z0-9_]*\]\]", ".*", expr)
    return re.sub(r"\$[A-Za-z_][A-Za-z0-9_]*", ".*", expr)


_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?:(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*)?)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>=~|!~|!=|==|>=|<=|[-+*/%^<>=@,(){}\[\]:])
""", re.VERBOSE)


def _tokens(expr: str) -> List[Tuple[str, str]]:
    out: List[Tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if m is None:
            raise PromQLNameError("cannot read %r at %d: %r" % (expr, pos, expr[pos:pos + 20]))
        kind = m.lastgroup or ""
        if kind not in ("space", "comment"):
            out.append((kind, m.group()))
        pos = m.end()
    return out


def _string_value(token: str) -> str:
    if token.startswith("`"):
        return token[1:-1]
    return re.sub(r"\\(.)", r"\1", token[1:-1])


def expression_names(expr: str) -> ExpressionNames:
    """The selectors and grouping labels of one PromQL expression (Grafana variables allowed)."""
    tokens = _tokens(substitute_grafana_variables(expr))
    selectors: List[Selector] = []
    grouping: Set[str] = set()
    i = 0
    n = len(tokens)

    def peek(j: int) -> Tuple[str, str]:
        return tokens[j] if j < n else ("end", "")

    def read_matchers(j: int) -> Tuple[Dict[str, Tuple[str, str]], int]:
        # tokens[j] is "{"; returns label -> (op, value) and the index after "}".
        matchers: Dict[str, Tuple[str, str]] = {}
        j += 1
        while True:
            kind, text = peek(j)
            if text == "}":
                return matchers, j + 1
            if text == ",":
                j += 1
                continue
            if kind == "string":
                # Prometheus 3 allows a quoted metric name or label name; not used by the kit.
                raise PromQLNameError("quoted names in selectors are not supported: %s" % expr)
            if kind != "ident":
                raise PromQLNameError("expected a label name in %s, got %r" % (expr, text))
            op_kind, op = peek(j + 1)
            value_kind, value = peek(j + 2)
            if op not in ("=", "!=", "=~", "!~") or value_kind != "string":
                raise PromQLNameError("bad matcher %s%s%s in %s" % (text, op, value, expr))
            matchers[text] = (op, _string_value(value))
            j += 3

    while i < n:
        kind, text = tokens[i]
        nxt_kind, nxt = peek(i + 1)
        if text == "[":
            # range or subquery: durations only, skip to the matching bracket
            while i < n and tokens[i][1] != "]":
                i += 1
            i += 1
            continue
        if text == "{":
            matchers, i = read_matchers(i)
            name = matchers.pop("__name__", None)
            if name is None or name[0] != "=":
                raise PromQLNameError("a selector without a literal metric name: %s" % expr)
            selectors.append(Selector(name[1], frozenset(matchers)))
            continue
        if kind != "ident":
            i += 1
            continue
        lower = text.lower()
        if text in GROUPING:
            i += 1
            if peek(i)[1] == "(":
                i += 1
                while peek(i)[1] != ")":
                    k, label = peek(i)
                    if k == "ident":
                        grouping.add(label)
                    elif label != ",":
                        raise PromQLNameError("bad %s(...) list in %s" % (text, expr))
                    i += 1
                i += 1
            elif text in ("by", "without", "on", "ignoring"):
                raise PromQLNameError("%s needs a label list in %s" % (text, expr))
            continue
        if text in BINARY_KEYWORDS or lower in NUMBER_WORDS:
            i += 1
            continue
        if text == "offset":
            i += 2
            continue
        if text in ("start", "end") and peek(i - 1)[1] == "@":
            i += 1
            continue
        if text in AGGREGATIONS and (nxt == "(" or nxt in ("by", "without")):
            i += 1
            continue
        if nxt == "(":
            if text in UNSUPPORTED:
                raise PromQLNameError("%s names labels in strings; not checkable: %s"
                                      % (text, expr))
            if text not in FUNCTIONS:
                raise PromQLNameError("unknown function %s in %s" % (text, expr))
            i += 1
            continue
        # a metric name, with or without matchers
        if nxt == "{":
            matchers, i = read_matchers(i + 1)
            if "__name__" in matchers:
                raise PromQLNameError("metric name given twice in %s" % expr)
            selectors.append(Selector(text, frozenset(matchers)))
        else:
            selectors.append(Selector(text, frozenset()))
            i += 1
    return ExpressionNames(tuple(selectors), frozenset(grouping))


def grafana_label_values(query: str) -> Tuple[Optional[str], str]:
    """``label_values(metric{...}, label)`` or ``label_values(label)`` -> (selector, label)."""
    m = re.fullmatch(r"\s*label_values\(\s*(?:(.+?)\s*,\s*)?([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*",
                     query)
    if m is None:
        raise PromQLNameError("not a label_values() query: %s" % query)
    return m.group(1), m.group(2)


# --- the exposition side ------------------------------------------------------------------------

# Sample names a family of each type exposes (text format 0.0.4 as prometheus_client writes it).
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "untyped": ("",),
    "unknown": ("",),
    "summary": ("", "_sum", "_count", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "info": ("_info",),
    "stateset": ("",),
}


def served_series(exposition: str) -> Dict[str, Optional[FrozenSet[str]]]:
    """Sample name -> its label names, for everything in a Prometheus text exposition.

    A family that is declared (HELP/TYPE) but has no samples yet - a labelled counter nothing
    has incremented - is served by name; its label names are unknown (None).
    """
    from prometheus_client.parser import text_string_to_metric_families

    served: Dict[str, Optional[FrozenSet[str]]] = {}
    for family in text_string_to_metric_families(exposition):
        if family.samples:
            for sample in family.samples:
                known = served.get(sample.name) or frozenset()
                served[sample.name] = known | frozenset(sample.labels)
            continue
        for suffix in _SUFFIXES.get(family.type, ("",)):
            served.setdefault(family.name + suffix, None)
    return served


def check_expression(expr: str, served: Dict[str, Optional[FrozenSet[str]]],
                     target_labels: Iterable[str],
                     contract: Optional[Dict[str, FrozenSet[str]]] = None) -> List[str]:
    """Problems (empty when fine) of one expression against what an exporter serves.

    ``target_labels`` are the labels Prometheus adds at scrape time (job, instance, node).
    ``contract`` gives the label names of a metric that is served but has no samples yet.
    """
    problems: List[str] = []
    names = expression_names(expr)
    extra = frozenset(target_labels)
    in_scope: Set[str] = set(extra)
    if not names.selectors:
        problems.append("no metric in %r" % expr)
    for sel in names.selectors:
        if sel.metric not in served:
            problems.append("metric %s is not served (in %r)" % (sel.metric, expr))
            continue
        labels = served[sel.metric]
        if labels is None:
            labels = (contract or {}).get(sel.metric)
            if labels is None:
                problems.append("metric %s has no samples and no contract labels" % sel.metric)
                continue
        in_scope |= labels
        unknown = sel.labels - labels - extra
        if unknown:
            problems.append("metric %s has no label %s (in %r)"
                            % (sel.metric, ", ".join(sorted(unknown)), expr))
    unknown_grouping = names.grouping - in_scope
    if unknown_grouping:
        problems.append("grouping by %s, which no metric of %r has"
                        % (", ".join(sorted(unknown_grouping)), expr))
    return problems
