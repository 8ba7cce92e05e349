"""Shared pieces of the Twilio SMS tests: the recipient number they send to."""




TO = "+14155550199"
