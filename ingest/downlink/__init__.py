"""The command gateway: people's requests checked, recorded and sent to devices; devices'
answers, gets and reported state taken back (`gateway.py` says how)."""
