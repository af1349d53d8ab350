// Writes src/http/page/us-states.json: the outlines of the US states as
// longitude/latitude rings, simplified and rounded, for the live dashboard's
// alert map (drawn by the page itself; no map tiles, nothing fetched at run
// time). Source: us-atlas (US Census Bureau cartographic boundaries).
// Regenerate with `npm run map` in web/; the output is committed.
import { readFileSync, writeFileSync } from 'node:fs';
import { feature } from 'topojson-client';
import { presimplify, simplify, quantile } from 'topojson-simplify';

const topology = JSON.parse(readFileSync(new URL('./node_modules/us-atlas/states-10m.json', import.meta.url)));
// Keep the points that carry the most area; enough for a 1000-pixel map.
const simplified = simplify(presimplify(topology), quantile(presimplify(topology), 0.12));
const states = feature(simplified, simplified.objects.states).features;

const round = (x) => Math.round(x * 100) / 100;
const out = states.map((f) => {
  const polygons = f.geometry.type === 'Polygon' ? [f.geometry.coordinates] : f.geometry.coordinates;
  const rings = [];
  for (const polygon of polygons) {
    for (const ring of polygon) {
      const points = [];
      for (const [lon, lat] of ring) {
        const p = [round(lon), round(lat)];
        const last = points[points.length - 1];
        if (!last || last[0] !== p[0] || last[1] !== p[1]) points.push(p);
      }
      if (points.length >= 4) rings.push(points.flat());
    }
  }
  return { name: f.properties.name, rings };
}).filter((s) => s.rings.length > 0).sort((a, b) => a.name.localeCompare(b.name));

const target = new URL('../src/http/page/us-states.json', import.meta.url);
writeFileSync(target, JSON.stringify(out) + '\n');
console.log(`${out.length} states, ${out.reduce((n, s) => n + s.rings.reduce((m, r) => m + r.length / 2, 0), 0)} points`);
