"""DNS checks: the host's address and PTR, SPF, DKIM, DMARC, MTA-STS and TLS-RPT."""

from __future__ import annotations

import re

import dns.exception
import dns.resolver
import dns.reversename

from mailstack.checks import Result, Target, error, ok
from mailstack.host.records import SPF_LOOKUP_LIMIT, spf_lookups


def resolver(server: str | None) -> dns.resolver.Resolver:
    """A resolver asking ``IP[:PORT]``, or the system's resolvers when None."""
    if server is None:
        return dns.resolver.Resolver()
    res = dns.resolver.Resolver(configure=False)
    address, _, port = server.rpartition(":") if server.count(":") == 1 else (server, "", "")
    res.nameservers = [address]
    if port:
        res.port = int(port)
    res.lifetime = 3.0
    return res


def lookup(res: dns.resolver.Resolver, name: str, rdtype: str) -> list[str]:
    """Answers as text; empty when the name or type does not exist."""
    try:
        answer = res.resolve(name, rdtype)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    if rdtype == "TXT":
        return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]
    return [r.to_text() for r in answer]


# ------------------------------------------------------------------ judges (pure)


def judge_address(host: str, addresses: list[str]) -> Result:
    if not addresses:
        return error("host address", f"{host} has no A record", f"publish the A record of {host} (pulumi up)")
    return ok("host address", f"{host} is {', '.join(addresses)}", addresses=addresses)


def judge_ptr(host: str, ptrs: dict[str, list[str]]) -> Result:
    wrong = {ip: names for ip, names in ptrs.items() if [n.rstrip(".") for n in names] != [host]}
    if not ptrs:
        return error("reverse DNS", f"{host} has no address to check", f"publish the A record of {host}")
    if wrong:
        shown = "; ".join(f"{ip} -> {', '.join(n) or 'no PTR'}" for ip, n in wrong.items())
        return error("reverse DNS", shown, f"set the Elastic IP's reverse DNS to {host} (pulumi up sets it once the A record resolves)")
    return ok("reverse DNS", f"{', '.join(ptrs)} -> {host}")


def spf_authorises(spf: str, host: str, addresses: list[str], mx_hosts: list[str]) -> bool:
    """Does an SPF record let ``host`` send, at its top level?"""
    terms = spf.split()[1:]
    for term in terms:
        qualifier, body = (term[0], term[1:]) if term[0] in "+-~?" else ("+", term)
        if qualifier != "+":
            continue
        if body in (f"a:{host}",) or any(body in (f"ip4:{ip}", f"ip4:{ip}/32") for ip in addresses):
            return True
        if body == "mx" and host in mx_hosts:
            return True
    return False


def judge_spf(domain: str, host: str, txts: list[str], addresses: list[str], mx_hosts: list[str]) -> Result:
    spfs = [t for t in txts if t.lower().startswith("v=spf1")]
    if not spfs:
        return error("SPF", f"{domain} publishes no SPF record", f"publish v=spf1 a:{host} ... (pulumi up)")
    if len(spfs) > 1:
        return error("SPF", f"{domain} publishes {len(spfs)} SPF records (a permanent error for receivers)",
                     "keep exactly one v=spf1 TXT record")
    spf = spfs[0]
    if not spf_authorises(spf, host, addresses, mx_hosts):
        return error("SPF", f"{spf!r} does not authorise {host}", f"add a:{host} to the SPF record of {domain}")
    if spf_lookups(spf) > SPF_LOOKUP_LIMIT:
        return error("SPF", f"{spf!r} needs {spf_lookups(spf)} lookups (limit {SPF_LOOKUP_LIMIT})",
                     "replace include: and a: terms by ip4: terms")
    return ok("SPF", spf)


def dkim_key(txt: str) -> str | None:
    match = re.search(r"(?:^|;)\s*p=([A-Za-z0-9+/=\s]*)", txt)
    return re.sub(r"\s", "", match.group(1)) if match else None


def judge_dkim(name: str, txts: list[str], expected_key: str | None) -> Result:
    keys = [k for k in (dkim_key(t) for t in txts if "v=DKIM1" in t or "p=" in t) if k]
    if not keys:
        return error("DKIM", f"no DKIM key published at {name}", f"publish the signer's public key at {name} (pulumi up)")
    if expected_key and re.sub(r"\s", "", expected_key) not in keys:
        return error("DKIM", f"the key at {name} is not the signer's key",
                     "publish the key the host signs with (a rotated key needs its new record)")
    return ok("DKIM", f"key published at {name}" + (" and matches the signer" if expected_key else ""))


def judge_dmarc(domain: str, txts: list[str]) -> Result:
    dmarcs = [t for t in txts if t.startswith("v=DMARC1")]
    if not dmarcs:
        return error("DMARC", f"_dmarc.{domain} has no DMARC record", f"publish v=DMARC1; p=none; rua=mailto:postmaster@{domain}")
    policy = re.search(r"(?:^|;)\s*p=(\w+)", dmarcs[0])
    if not policy:
        return error("DMARC", f"{dmarcs[0]!r} has no policy (p=)", "add p=none, p=quarantine or p=reject")
    return ok("DMARC", dmarcs[0])


def judge_tagged(check: str, name: str, txts: list[str], prefix: str, example: str) -> Result:
    if any(t.startswith(prefix) for t in txts):
        return ok(check, next(t for t in txts if t.startswith(prefix)))
    return error(check, f"{name} has no {prefix} record", f"publish {example} at {name} (pulumi up with mailstack:web true)")


# ------------------------------------------------------------------- checks (I/O)


def dns_checks(target: Target) -> list[Result]:
    """Every DNS check of the target; run as one unit (the answers feed each other)."""
    res = resolver(target.dns_server)
    addresses = lookup(res, target.host, "A")
    results = [judge_address(target.host, addresses)]
    ptrs = {}
    for ip in addresses:
        try:
            ptrs[ip] = lookup(res, dns.reversename.from_address(ip).to_text(), "PTR")
        except dns.exception.DNSException:
            ptrs[ip] = []
    results.append(judge_ptr(target.host, ptrs))
    mx_hosts = [m.split()[-1].rstrip(".") for m in lookup(res, target.domain, "MX")]
    results.append(judge_spf(target.domain, target.host, lookup(res, target.domain, "TXT"), addresses, mx_hosts))
    if target.dkim_selector:
        name = f"{target.dkim_selector}._domainkey.{target.domain}"
        results.append(judge_dkim(name, lookup(res, name, "TXT"), target.dkim_public_key))
    else:
        results.append(error("DKIM", "no DKIM selector to look up: the key was not checked",
                             "give --dkim-selector, or -s ENV (the stack's mailstack:dns.dkim_selector)"))
    results.append(judge_dmarc(target.domain, lookup(res, f"_dmarc.{target.domain}", "TXT")))
    if target.mta_sts:
        results.append(judge_tagged("MTA-STS", f"_mta-sts.{target.domain}", lookup(res, f"_mta-sts.{target.domain}", "TXT"),
                                    "v=STSv1", "v=STSv1; id=..."))
        results.append(judge_tagged("TLS-RPT", f"_smtp._tls.{target.domain}", lookup(res, f"_smtp._tls.{target.domain}", "TXT"),
                                    "v=TLSRPTv1", "v=TLSRPTv1; rua=mailto:..."))
    return results
