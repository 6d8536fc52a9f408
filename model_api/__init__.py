"""The contract shared by training, publishing, serving and client: one definition of each name.

The modules the client and server need import TensorFlow only inside functions; preprocess and
decision (the signature's input pipeline and the meaning of its outputs) are TensorFlow graph code.
"""
