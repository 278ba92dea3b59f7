// The oracle of internal/hubtest: the official JS client downloads a
// snapshot from the fixture Hub, and this prints what it wrote, for the Go
// test to compare with what the fixture holds.
//
// usage: HFJS=<npm prefix> node snapshot.mjs HUB_URL ORG/NAME REVISION CACHE_DIR [hf_TOKEN]
//
// HFJS is the directory `npm install --prefix` filled (bin/hfjs): Node's
// ES module resolution ignores NODE_PATH, so the package is imported by the
// path of its ESM entry instead. Prints one JSON line on stdout:
// {"version","commit","ref","files":[{path,size,sha256,blob}]} or, exiting 1,
// {"version","error":{name,message,statusCode,url}}.
import { readFile, readdir, readlink } from "node:fs/promises";
import { basename, join, relative } from "node:path";
import { pathToFileURL } from "node:url";
import { createHash } from "node:crypto";

console.debug = () => {}; // the client logs "Downloading … to ….incomplete" on stdout

const PKG = "@huggingface/hub";
let version = "unknown"; // of the client loaded, printed with errors too

async function loadHub() {
	const prefix = process.env.HFJS;
	if (!prefix) return await import(PKG);
	const dir = join(prefix, "node_modules", ...PKG.split("/"));
	const manifest = JSON.parse(await readFile(join(dir, "package.json"), "utf8"));
	const exp = manifest.exports?.["."];
	const entry = (typeof exp === "string" ? exp : exp?.import) ?? manifest.module ?? manifest.main;
	version = manifest.version;
	return await import(pathToFileURL(join(dir, entry)).href);
}

async function* walk(dir) {
	for (const e of await readdir(dir, { withFileTypes: true })) {
		const p = join(dir, e.name);
		if (e.isDirectory()) yield* walk(p);
		else yield p; // files are symlinks into ../blobs
	}
}

async function main() {
	const [hubUrl, repo, revision, cacheDir, accessToken] = process.argv.slice(2);
	if (!hubUrl || !repo || !revision || !cacheDir) {
		throw new Error("usage: node snapshot.mjs HUB_URL ORG/NAME REVISION CACHE_DIR [hf_TOKEN]");
	}
	const hub = await loadHub();
	const snapshotDir = await hub.snapshotDownload({
		repo, revision, hubUrl, cacheDir,
		...(accessToken ? { accessToken } : {}),
	});
	const files = [];
	for await (const p of walk(snapshotDir)) {
		const buf = await readFile(p);
		files.push({
			path: relative(snapshotDir, p).split("\\").join("/"),
			size: buf.length,
			sha256: createHash("sha256").update(buf).digest("hex"),
			blob: basename(await readlink(p).catch(() => p)),
		});
	}
	files.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
	// refs/<revision> holds the commit a branch or tag resolved to; the
	// client writes none for a commit sha.
	const repoDir = join(snapshotDir, "..", "..");
	const ref = await readFile(join(repoDir, "refs", revision), "utf8").catch(() => null);
	return { version, commit: basename(snapshotDir), ref, files };
}

try {
	console.log(JSON.stringify(await main()));
} catch (e) {
	console.log(JSON.stringify({
		version,
		error: { name: e?.name, message: String(e?.message ?? e), statusCode: e?.statusCode, url: e?.url },
	}));
	process.exitCode = 1;
}
