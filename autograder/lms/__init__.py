"""The learning management systems' own files: the downloads instructors get from Canvas,
Moodle and Blackboard, their gradebook files, and the feedback zips they take back."""
