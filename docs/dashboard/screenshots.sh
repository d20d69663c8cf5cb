#!/usr/bin/env bash
# Take the MLflow dashboard screenshots the README shows, from a project's own MLflow store.
#
#   bash docs/dashboard/screenshots.sh PROJECT [OUTDIR]
#
# PROJECT  a project folder whose mlflow.db holds runs and a registered model, e.g. a copy of
#          this repository after `resnet-mlops run` then `dvc exp run -S train.epochs=3`
#          (two versions: @champion and a @challenger that was not promoted).
# OUTDIR   where the PNGs go (default: this script's folder, docs/dashboard/).
#
# It starts `mlflow ui` on PROJECT/mlflow.db on a free port of 127.0.0.1, opens headless
# Chromium with playwright-core (MLflow's "Model training" mode, the assistant panel closed),
# writes runs.png (the experiment's runs, with test_accuracy, test_macro_f1 and train.epochs
# as columns), run.png (the run of the newest version, metrics filtered to test_), model.png
# (the registered model: description, tags, versions, aliases) and version.png (the newest
# version: description, aliases and every tag; in the browser a tags table scrolls in a box
# about three rows high, here shown whole), shrinks each PNG under 250 KB with Pillow, and stops the server.
#
# Needs: Chromium (Debian: `apt-get install -y chromium`; another binary: CHROMIUM=/path);
# Node.js with npm (playwright-core is installed into a temporary folder; or point
# PLAYWRIGHT_CORE_DIR at a folder whose node_modules has it); the project's environment
# (mlflow, PyYAML, Pillow): this repository's .venv, or VENV=/path/to/venv.
# Optional: EXPERIMENT, MODEL_NAME (default: params.yaml's mlflow.experiment and
# register.model_name), VERSION (default: the newest), RUN_ID (default: that version's run).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
project=$(cd "${1:?usage: bash docs/dashboard/screenshots.sh PROJECT [OUTDIR]}" && pwd)
outdir=$(mkdir -p "${2:-$here}" && cd "${2:-$here}" && pwd)
venv=${VENV:-$repo/.venv}
py=$venv/bin/python
chromium=${CHROMIUM:-/usr/bin/chromium}

[[ -f $project/mlflow.db ]] || { echo "no MLflow store at $project/mlflow.db" >&2; exit 2; }
[[ -x $chromium ]] || { echo "no Chromium at $chromium (apt-get install -y chromium)" >&2; exit 2; }
[[ -x $py ]] || { echo "no Python environment at $venv (make run creates it)" >&2; exit 2; }

read -r default_experiment default_model < <("$py" - "$project/params.yaml" <<'PY'
import sys, yaml
params = yaml.safe_load(open(sys.argv[1]))
print(params["mlflow"]["experiment"], params["register"]["model_name"])
PY
)
experiment=${EXPERIMENT:-$default_experiment}
model_name=${MODEL_NAME:-$default_model}

work=$(mktemp -d)
server_pid=
cleanup() {
    if [[ -n $server_pid ]]; then kill -TERM -- "-$server_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

port=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url=http://127.0.0.1:$port
# In its own session, so that the trap stops the server and its workers together.
(cd "$project" && MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true exec setsid "$venv/bin/mlflow" ui \
    --backend-store-uri "sqlite:///$project/mlflow.db" --host 127.0.0.1 --port "$port" \
    >"$work/mlflow-ui.log" 2>&1) &
server_pid=$!
for _ in $(seq 120); do
    curl -fsS "$url/health" >/dev/null 2>&1 && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/mlflow-ui.log" >&2; exit 1; }
    sleep 0.5
done
curl -fsS "$url/health" >/dev/null || { echo "mlflow ui did not answer at $url" >&2; exit 1; }

if [[ -n ${PLAYWRIGHT_CORE_DIR:-} ]]; then
    node_path=$PLAYWRIGHT_CORE_DIR/node_modules
else
    (cd "$work" && npm install --silent --no-audit --no-fund playwright-core@1 >/dev/null)
    node_path=$work/node_modules
fi

cat >"$work/shoot.js" <<'JS'
// Node: the four pages of the MLflow 3 UI (hash routes), each once it shows its content.
const { chromium } = require('playwright-core');
const [url, outdir, experiment, modelName, wantVersion, wantRun, executablePath] = process.argv.slice(2);

async function api(path, body) {
  const r = await fetch(url + '/api/2.0/mlflow/' + path, body === undefined ? {} :
    { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status} ${await r.text()}`);
  return r.json();
}

// Grow the viewport until the page's own scrolling pane (the largest) shows all it holds.
async function fitHeight(page, width, maxHeight) {
  for (let i = 0; i < 3; i++) {
    const extra = await page.evaluate(() => {
      let most = 0;
      for (const el of document.querySelectorAll('main, main *, div')) {
        const s = getComputedStyle(el).overflowY;
        if ((s === 'auto' || s === 'scroll') && el.clientHeight > 300)
          most = Math.max(most, el.scrollHeight - el.clientHeight);
      }
      return most;
    });
    const height = page.viewportSize().height;
    if (extra < 4 || height >= maxHeight) break;
    await page.setViewportSize({ width, height: Math.min(maxHeight, height + extra + 8) });
    await page.waitForTimeout(800);
  }
}

(async () => {
  const exp = (await api('experiments/get-by-name?experiment_name=' + encodeURIComponent(experiment))).experiment;
  const versions = (await api('model-versions/search?max_results=1000&filter=' +
    encodeURIComponent(`name='${modelName}'`))).model_versions || [];
  if (!versions.length) throw new Error(`no versions of ${modelName} in the store`);
  versions.sort((a, b) => Number(b.version) - Number(a.version));
  const version = wantVersion ? versions.find(v => v.version === wantVersion) : versions[0];
  if (!version) throw new Error(`${modelName} has no version ${wantVersion}`);
  const runId = wantRun || version.run_id;
  const run = (await api('runs/get?run_id=' + runId)).run;
  const model = encodeURIComponent(modelName);

  const browser = await chromium.launch({ executablePath, args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'] });
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 }, deviceScaleFactor: 1 });
  const runsView = JSON.stringify({ selectedColumns: ['attributes.`Dataset`', 'attributes.`Models`',
    'metrics.`test_accuracy`', 'metrics.`test_macro_f1`', 'params.`train.epochs`'] });
  await context.addInitScript(([expId, view]) => {
    // MLflow 3 starts in GenAI mode (an empty traces overview, GenAI menus): take the pages as
    // they are with the "Model training" switch at the top left on.
    localStorage.setItem('mlflow.workflowType_v1', JSON.stringify('machine_learning'));
    // The assistant panel MLflow opens on a first visit would cover a third of every page.
    localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');
    localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');
    // The runs table's columns, as the Columns menu would set them.
    const key = `MLflowLocalStorage-1.1-ExperimentPage-["${expId}"]-ReactComponentState`;
    if (!localStorage.getItem(key)) localStorage.setItem(key, view);
  }, [exp.experiment_id, runsView]);
  const page = await context.newPage();
  // A tags table scrolls inside a 280 px box (about three rows): show every row.
  const tableInFull = '.du-bois-light-table-body { max-height: none !important; height: auto !important; }';
  const shots = [
    { file: 'runs.png', route: `/#/experiments/${exp.experiment_id}/runs`, width: 1560, height: 560,
      ready: async () => { await page.waitForSelector('.ag-row'); await page.getByText(run.info.run_name, { exact: true }).first().waitFor(); } },
    { file: 'run.png', route: `/#/experiments/${exp.experiment_id}/runs/${runId}`, width: 1400, height: 1300,
      ready: async () => {
        await page.getByText('Parameters', { exact: false }).first().waitFor();
        await page.getByPlaceholder('Search metrics').fill('test_');
      } },
    { file: 'model.png', route: `/#/models/${model}`, width: 1400, height: 900, fit: 3600,
      ready: async () => {
        await page.getByRole('link', { name: `Version ${version.version}`, exact: true }).first().waitFor();
        await page.addStyleTag({ content: tableInFull });
      } },
    { file: 'version.png', route: `/#/models/${model}/versions/${version.version}`, width: 1400, height: 900, fit: 2600,
      ready: async () => {
        await page.getByText('Source Run').first().waitFor();
        await page.getByText('champion_decision', { exact: true }).first().waitFor();
        await page.addStyleTag({ content: tableInFull });
      } },
  ];
  for (const shot of shots) {
    await page.setViewportSize({ width: shot.width, height: shot.height });
    await page.goto(url + shot.route);
    await shot.ready();
    await page.waitForTimeout(2000);  // charts, counts and aliases arrive in later requests
    if (shot.fit) await fitHeight(page, shot.width, shot.fit);
    await page.screenshot({ path: `${outdir}/${shot.file}` });
    console.log(`${shot.file}: ${url}${shot.route}`);
  }
  await browser.close();
})().catch(e => { console.error(e); process.exit(1); });
JS

NODE_PATH=$node_path timeout 300 node "$work/shoot.js" "$url" "$work" "$experiment" "$model_name" \
    "${VERSION:-}" "${RUN_ID:-}" "$chromium"

# Each PNG under 250 KB: a 256-colour palette first, then smaller if it must be.
"$py" - "$work" "$outdir" runs.png run.png model.png version.png <<'PY'
import io, sys
from pathlib import Path
from PIL import Image

src, dst, names = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
for name in names:
    image = Image.open(src / name).convert("RGB")
    scale = 1.0
    while True:
        sized = image if scale == 1.0 else image.resize(
            (round(image.width * scale), round(image.height * scale)), Image.LANCZOS)
        buffer = io.BytesIO()
        sized.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(buffer, "PNG", optimize=True)
        if buffer.tell() <= 250_000 or scale < 0.5:
            break
        scale *= 0.9
    (dst / name).write_bytes(buffer.getvalue())
    print(f"{dst / name}: {sized.width}x{sized.height}, {buffer.tell() // 1000} KB")
PY
