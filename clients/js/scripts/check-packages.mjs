// npm pack of each published package, then check what the tarball holds:
// the built module and its types, package.json and README, nothing else (no
// tests, sources, configs); versions equal to the crate's; @pollcast/client
// with no runtime dependencies and its packed dist/index.js byte for byte the
// committed file pollcast serves at /_pollcast/client.js.
//
//   node scripts/check-packages.mjs     (after `npm run build`)
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const js = join(dirname(fileURLToPath(import.meta.url)), "..");
const repo = join(js, "..", "..");
const crateVersion = readFileSync(join(repo, "Cargo.toml"), "utf8").match(/^version = "([^"]+)"/m)[1];

const expected = {
  client: ["README.md", "dist/index.d.ts", "dist/index.js", "package.json"],
  react: ["README.md", "dist/index.d.ts", "dist/index.js", "dist/query.d.ts", "dist/query.js", "package.json"],
};

const out = mkdtempSync(join(tmpdir(), "pollcast-pack-"));
let failed = false;
const fail = (msg) => {
  failed = true;
  console.error(`FAIL ${msg}`);
};
try {
  for (const [dir, files] of Object.entries(expected)) {
    const pkgDir = join(js, dir);
    const pkg = JSON.parse(readFileSync(join(pkgDir, "package.json"), "utf8"));
    const [info] = JSON.parse(
      execFileSync("npm", ["pack", "--json", "--pack-destination", out], { cwd: pkgDir, encoding: "utf8" }),
    );
    const tarball = join(out, info.filename);
    const listed = execFileSync("tar", ["-tzf", tarball], { encoding: "utf8" })
      .split("\n")
      .filter(Boolean)
      .map((p) => p.replace(/^package\//, ""))
      .sort();
    console.log(`${pkg.name}@${pkg.version}: ${info.filename} (${info.size} bytes): ${listed.join(", ")}`);
    if (JSON.stringify(listed) !== JSON.stringify(files)) {
      fail(`${pkg.name}: tarball holds [${listed}], expected [${files}]`);
    }
    for (const f of listed) {
      if (/(^|\/)(test|tests|__tests__)\/|\.test\.|\.spec\.|tsconfig|\.ts$(?<!\.d\.ts$)/.test(f)) {
        fail(`${pkg.name}: ${f} must not be published`);
      }
    }
    if (pkg.version !== crateVersion) fail(`${pkg.name} version ${pkg.version} != crate ${crateVersion}`);
    for (const [name, v] of Object.entries(pkg.dependencies ?? {})) {
      if (name.startsWith("@pollcast/") && v !== crateVersion) fail(`${pkg.name} depends on ${name}@${v}`);
    }
    // Types are where package.json says, for every export.
    for (const [sub, target] of Object.entries(pkg.exports)) {
      if (typeof target === "object" && !listed.includes(target.types.replace(/^\.\//, ""))) {
        fail(`${pkg.name}: export ${sub} has no types in the tarball`);
      }
    }
    const packed = (f) => execFileSync("tar", ["-xzOf", tarball, `package/${f}`]);
    if (dir === "client") {
      if (Object.keys(pkg.dependencies ?? {}).length > 0) fail("@pollcast/client has runtime dependencies");
      const served = readFileSync(join(pkgDir, "dist/index.js"));
      if (!packed("dist/index.js").equals(served)) {
        fail("@pollcast/client: packed dist/index.js differs from the committed file pollcast serves");
      }
    } else {
      const deps = Object.keys(pkg.dependencies ?? {});
      if (JSON.stringify(deps) !== '["@pollcast/client"]') fail(`@pollcast/react runtime dependencies: ${deps}`);
    }
    if (!packed("dist/index.d.ts").toString().includes("export")) fail(`${pkg.name}: empty types`);
  }
} finally {
  rmSync(out, { recursive: true, force: true });
}
if (failed) process.exit(1);
console.log("packages ok");
