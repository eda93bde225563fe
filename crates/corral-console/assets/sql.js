// SQL: run a query, see the table, chart a time column against the numeric ones, download CSV.
'use strict';
(() => {
  const { api, el, fill, number } = Corral;
  const $ = (id) => document.getElementById(id);
  const box = $('sql');
  const saved = sessionStorage.getItem('corral-sql');
  if (saved) box.value = saved;

  async function run(event) {
    event?.preventDefault();
    sessionStorage.setItem('corral-sql', box.value);
    $('sql-error').textContent = '';
    const started = performance.now();
    try {
      const out = await api('POST', '/api/v1/query', { sql: box.value });
      $('took').textContent = `${out.row_count} rows in ${Math.round(performance.now() - started)} ms${out.truncated ? ' (truncated)' : ''}`;
      const table = $('result');
      fill(table.tHead, el('tr', {}, out.columns.map((c, i) => el('th', { title: out.types[i] }, c))));
      fill(table.tBodies[0], out.rows.map((row) => el('tr', {}, row.map((v, i) => {
        const numeric = typeof v === 'number';
        return el('td', { class: numeric ? 'num' : undefined }, v === null ? '' : numeric ? number(v) : typeof v === 'object' ? JSON.stringify(v) : String(v));
      }))));
      chart(out);
    } catch (e) {
      $('sql-error').textContent = e.message;
    }
  }

  function chart(out) {
    const time = out.types.indexOf('timestamp');
    const numeric = out.types.map((t, i) => (/^(integer|unsigned|float)/.test(t) ? i : -1)).filter((i) => i >= 0);
    $('chart-card').hidden = time < 0 || !numeric.length || !out.rows.length;
    if ($('chart-card').hidden) return;
    const series = numeric.slice(0, 6).map((i) => ({ name: out.columns[i], points: out.rows.filter((r) => r[time] !== null && r[i] !== null).map((r) => [Date.parse(r[time]), r[i]]) }));
    Corral.chart.draw($('chart'), series);
  }

  $('query').addEventListener('submit', run);
  box.addEventListener('keydown', (event) => { if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) run(event); });
  $('csv').addEventListener('click', async () => {
    try {
      const csv = await api('POST', '/api/v1/query', { sql: box.value }, { accept: 'text/csv' });
      const url = URL.createObjectURL(new Blob([csv], { type: 'text/csv' }));
      const a = el('a', { href: url, download: 'query.csv' });
      document.body.append(a); a.click(); a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 1000);
    } catch (e) {
      $('sql-error').textContent = e.message;
    }
  });
})();
