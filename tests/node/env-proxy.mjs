// For Node versions whose fetch ignores HTTPS_PROXY (before 22.21 and 24.5): route fetch, and so the
// official SDKs, through the proxy the environment names. Load it with
//   NODE_OPTIONS="--import /path/to/env-proxy.mjs"
// next to the variables egressguard prints; it needs the `undici` package where the file sits.
import { EnvHttpProxyAgent, setGlobalDispatcher } from "undici";

setGlobalDispatcher(new EnvHttpProxyAgent());
