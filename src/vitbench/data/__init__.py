"""The data half of the pipeline: sources, cleaning, splitting, augmentation and the tf.data input."""
