"""Jobs, schedules and sensors."""

JOBS: list = []
SCHEDULES: list = []
SENSORS: list = []
