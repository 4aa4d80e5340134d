"""From packets (or a sound card) to call events. SIP identity exists only inside this package."""
