// "Agent is typing" for the customer's chat window, kept cheap: each signal is a small
// transaction and an event every agent's feed carries, so "on" goes out at most every
// ON_EVERY ms while keys are pressed and "off" once the composer has been quiet for QUIET ms.

import { api } from "./api.js";

const ON_EVERY = 3000;
const QUIET = 4000;

export class TypingSignal {
  constructor(conversationId) {
    this.path = `/api/v1/conversations/${conversationId}/typing`;
    this.onAt = 0;
    this.timer = null;
  }

  // A key was pressed in the composer.
  poke() {
    const now = Date.now();
    if (now - this.onAt >= ON_EVERY) {
      this.onAt = now;
      this.post(true);
    }
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.stop(true), QUIET);
  }

  // The composer went quiet (say "off") or the reply was sent (the widget hides the line
  // when the message arrives, so no "off" is needed then).
  stop(sayOff) {
    clearTimeout(this.timer);
    this.timer = null;
    if (this.onAt && sayOff) this.post(false);
    this.onAt = 0;
  }

  post(on) {
    // Best effort: a lost typing signal is not worth an error in front of the agent.
    api("POST", this.path, { on }).catch(() => {});
  }
}
