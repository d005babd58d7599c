"""Chat: the conversation template (`qkv.chat.template`) and talking to a trained chat run (`qkv.chat.session`)."""
