/* The emailed pairing link's page, once it paired: tell an open /preferences/ tab (same browser),
 * so that it shows the new channel at once instead of waiting for its next check. */
(function () {
  "use strict";
  const script = document.currentScript;
  if (!script || !("BroadcastChannel" in window)) return;
  const channel = new BroadcastChannel(script.dataset.channel);
  channel.postMessage({ paired: true });
  channel.close();
})();
