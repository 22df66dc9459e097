// Upload one file to Doorito with tus-js-client; prints one JSON line with the outcome.
// Usage: node upload.mjs '<json options>'
//   {endpoint, token, path, filename, chunkSize?, parallelUploads?, retryDelays?, uploadUrl?}
import { readFileSync } from 'node:fs'
import { Upload } from 'tus-js-client'

const options = JSON.parse(process.argv[2])
const data = readFileSync(options.path)
let reported = false
const report = (outcome) => {
  reported = true
  process.stdout.write(JSON.stringify(outcome) + '\n')
}
// tus-js-client 4.3.1's Node stack listens for no error on a response: a connection reset after the response
// began leaves its promise pending with nothing to keep the process alive, so it would exit 0 silently.
process.on('beforeExit', () => {
  if (!reported) report({ event: 'stalled', url: upload.url })
})

const upload = new Upload(data, {
  endpoint: options.endpoint,
  uploadUrl: options.uploadUrl ?? null,
  headers: { Authorization: `Bearer ${options.token}` },
  metadata: { filename: options.filename, filetype: 'application/octet-stream' },
  chunkSize: options.chunkSize ?? Infinity,
  parallelUploads: options.parallelUploads ?? 1,
  retryDelays: options.retryDelays ?? [0, 200, 500],
  onSuccess() {
    report({ event: 'success', url: upload.url })
  },
  onError(error) {
    report({ event: 'error', url: upload.url, message: String(error) })
    process.exitCode = 1
  },
})
upload.start()
