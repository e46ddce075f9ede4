// k6 script for loadtest/run: GET, or METHOD=POST with a 1 KiB body, to URL; each VU loops
// as fast as it can on its keep-alive connection. The runner reads the JSON summary written
// by handleSummary (requests, failures, median / p99 / p99.9 of http_req_duration).
// EXPECT=STATUS (the async case: 202) makes any other status a failed request (by default
// only 4xx/5xx and no answer are).
import http from 'k6/http';

if (__ENV.EXPECT) {
  http.setResponseCallback(http.expectedStatuses(Number(__ENV.EXPECT)));
}

const url = __ENV.URL;
const method = __ENV.METHOD || 'GET';
const body = method === 'GET' ? null : 'x'.repeat(Number(__ENV.BODY_BYTES || 1024));
const params = method === 'GET' ? {} : { headers: { 'Content-Type': 'application/octet-stream' } };

export const options = {
  discardResponseBodies: true,
  summaryTrendStats: ['med', 'p(99)', 'p(99.9)'],
};

export default function () {
  http.request(method, url, body, params);
}

export function handleSummary(data) {
  return { [__ENV.SUMMARY]: JSON.stringify(data) };
}
