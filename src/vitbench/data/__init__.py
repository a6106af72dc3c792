"""The data half of the pipeline: sources, cleaning, splitting, augmentation, their figures and the
tf.data input. May import core and plots; never models or anything above (the data stages run no
model code)."""
