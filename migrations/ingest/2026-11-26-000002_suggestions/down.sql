DROP TABLE notifications;
DROP TABLE notification_preferences;
DROP TABLE suggestion_responses;
DROP TABLE suggestions;
