"""The TwiML documents of a call, built with the SDK's VoiceResponse (which escapes all text)."""
from twilio.twiml.voice_response import VoiceResponse

from connectors.platforms.formatting import to_plain

DEFAULT_GREETING = "Hello, this is BRAIN. How can I help you?"
DEFAULT_FILLER = "One moment, please."
DEFAULT_GOODBYE = "Goodbye."
SAY_CHUNK = 3000  # well under Twilio's limit for one <Say>


def chunks(text, size=SAY_CHUNK):
    """Split long text at whitespace into pieces of at most `size` characters."""
    text = " ".join(text.split())
    while len(text) > size:
        cut = text.rfind(" ", 0, size)
        cut = cut if cut > 0 else size
        yield text[:cut]
        text = text[cut:].lstrip()
    if text:
        yield text


class Speaker:
    def __init__(self, config):
        self.config = config
        self.say_options = {k: config[k] for k in ("voice", "language") if config.get(k)}

    def _say(self, verb, text):
        for piece in chunks(text):
            verb.say(piece, **self.say_options)

    def _gather(self, response, action, prompt=None):
        gather = response.gather(
            input="speech",
            action=action,
            method="POST",
            speech_timeout="auto",
            timeout=int(self.config.get("gather_timeout", 5)),
            action_on_empty_result=True,
            **({"language": self.config["language"]} if self.config.get("language") else {}),
        )
        if prompt:
            self._say(gather, prompt)
        # Reached only if the Gather ends without calling its action: counts as silence there.
        response.redirect(action, method="POST")
        return response

    def greeting(self, action):
        return self._gather(VoiceResponse(), action, self.config.get("greeting") or DEFAULT_GREETING)

    def listen(self, action):
        return self._gather(VoiceResponse(), action)

    def reprompt(self, action):
        return self._gather(VoiceResponse(), action, "Sorry, I did not hear anything. What can I do for you?")

    def reply(self, text, action):
        """BRAIN's reply (Markdown), spoken as plain text: a speech engine would read out the markers."""
        response = VoiceResponse()
        self._say(response, to_plain(text))
        return self._gather(response, action)

    def hold(self, redirect, first):
        response = VoiceResponse()
        if first:
            self._say(response, self.config.get("filler") or DEFAULT_FILLER)
        response.redirect(redirect, method="POST")
        return response

    def apology(self, action, too_slow=False):
        text = (
            "Sorry, this is taking too long. Please ask again."
            if too_slow
            else "Sorry, I cannot answer that right now."
        )
        response = VoiceResponse()
        self._say(response, text)
        return self._gather(response, action)

    def goodbye(self, after_silence=False):
        silence = ["I did not hear anything."] if after_silence else []
        return self._say_and_hang_up(VoiceResponse(), *silence, self.config.get("goodbye") or DEFAULT_GOODBYE)

    def unavailable(self):
        return self._say_and_hang_up(
            VoiceResponse(), "Sorry, this line is not available right now. Please try again later."
        )

    # --- outbound notifications ---
    def notification(self, text, ack_url=None):
        """BRAIN's message (Markdown) as plain text, with the acknowledgement prompt when `ack_url` is given."""
        text = to_plain(text)
        response = VoiceResponse()
        if not ack_url:
            self._say(response, text)
            return response
        return self._ack_prompt(response, ack_url, text, "Press 1 to acknowledge.")

    def ask_ack_again(self, ack_url):
        return self._ack_prompt(VoiceResponse(), ack_url, "Press 1 to acknowledge this message.")

    def _ack_prompt(self, response, ack_url, *lines):
        """Say `lines` while waiting for one key (posted to `ack_url`), then goodbye and hang up."""
        gather = response.gather(input="dtmf", num_digits=1, action=ack_url, method="POST", timeout=8)
        for line in lines:
            self._say(gather, line)
        return self._say_and_hang_up(response, DEFAULT_GOODBYE)

    def acknowledged(self):
        return self._say_and_hang_up(VoiceResponse(), "Thank you, your acknowledgement is recorded. Goodbye.")

    def _say_and_hang_up(self, response, *lines):
        """Say `lines` on `response`, then end the call."""
        for line in lines:
            self._say(response, line)
        response.hangup()
        return response
